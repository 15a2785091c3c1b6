"""A firing alert and what the loop did about it: the alert on-call sees, kept up to date."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from contracts.base import utcnow
from contracts.events import AlertRaised, AlertStatus
from services.monitoring.concept import DriftSignal


@dataclass
class FiringAlert:
    """One firing alert, as on-call last saw it."""

    alert: AlertRaised
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


@dataclass
class DriftIncident(FiringAlert):
    """A firing concept-drift alert: the drift that raised it, the retrains it asked for, and
    the errors of the versions that came after the drifted one."""

    drift: DriftSignal | None = None
    """The signal that raised it: its version, and where retrain windows start."""
    attempts: int = 0
    """Retrains requested for it."""
    previous: dict[str, str] | None = None
    """The last of those requests and how it ended (rejected, no decision)."""
    after: deque[float] = field(default_factory=deque)
    """Errors of the newest labeled predictions of versions newer than the drifted one
    (bounded by `recovery_samples`). Counted over versions, not per version, so an online
    learner's snapshots every few hundred records can still resolve it."""

    fired_at: float = 0.0
    """Monitoring's clock at the alarm."""
    predicted_at_fire: int = 0
    """Predictions of the model seen at the alarm."""
    swapped: bool = False
    """A newer version has answered since the alarm (its swap latency is measured)."""

    def swap(self, version: int, now: float, predicted: int) -> tuple[float, int]:
        """The first prediction of a newer `version`: alarm → swap in seconds and in the
        predictions served meanwhile, kept in the alert's evidence (the next word on-call
        gets, an update or the resolution, carries it)."""
        self.swapped = True
        seconds, samples = now - self.fired_at, predicted - self.predicted_at_fire
        self.alert = self.alert.model_copy(update={"evidence": {
            **self.alert.evidence, "swap_latency_seconds": seconds,
            "swap_latency_samples": samples, "swapped_to_version": version}})
        return seconds, samples

    @property
    def version(self) -> int:
        """The version that drifted."""
        return int(self.alert.evidence["version"])

    def recovered_error(self) -> float | None:
        """Mean error of the newer versions over `recovery_samples`, once that many came."""
        if self.after.maxlen is None or len(self.after) < self.after.maxlen:
            return None
        return sum(self.after) / len(self.after)
