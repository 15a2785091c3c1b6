"""A firing alert and what the loop did about it: the alert on-call sees, kept up to date."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.base import utcnow
from contracts.events import AlertRaised, AlertStatus
from services.monitoring.concept import DriftSignal


@dataclass
class FiringAlert:
    """One firing alert. A concept-drift alert also carries its drift and its retrains."""

    alert: AlertRaised
    baseline_error: float = 0.0
    error_at_fire: float = 0.0
    drift: DriftSignal | None = None
    """The signal that raised it: where its retrain windows start."""
    attempts: int = 0
    """Retrains requested for it."""
    previous: dict[str, str] | None = None
    """The last of those requests and how it ended (rejected, no decision)."""
    updates: int = 0
    """Times the alert was re-published while firing."""

    def revise(self, **evidence: Any) -> AlertRaised:
        """The alert again, still firing, its evidence brought up to date. Each revision is
        numbered (`evidence.update`), so it travels under an event id of its own."""
        self.updates += 1
        self.alert = self.alert.model_copy(update={
            "at": utcnow(), "evidence": {**self.alert.evidence, **evidence,
                                         "update": self.updates}})
        return self.alert

    def resolve(self, summary: str, **evidence: Any) -> AlertRaised:
        """The alert's resolution (same alert_id), with the evidence of why."""
        return self.alert.model_copy(update={
            "status": AlertStatus.RESOLVED, "at": utcnow(), "summary": summary,
            "evidence": {**self.alert.evidence, **evidence}})


def alert_event_id(alert: AlertRaised) -> str:
    """The alert's CloudEvents id: one per alert, status and revision. A consumer that
    de-duplicates by id drops a re-delivery of the same word, never a newer one."""
    update = alert.evidence.get("update")
    base = f"{alert.alert_id}/{alert.status.value}"
    return f"{base}/{update}" if isinstance(update, int) and update else base
