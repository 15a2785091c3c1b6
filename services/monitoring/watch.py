"""What monitoring keeps for one model: its detectors, firing alerts and retrain state."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.monitoring.concept import ConceptWatch
from services.monitoring.data_drift import DataDriftWatch
from services.monitoring.incident import DriftIncident, FiringAlert
from services.monitoring.live import LiveMetrics
from shared.project import ModelSpec


@dataclass
class ModelWatch:
    """Everything monitoring tracks for one model."""

    name: str
    spec: ModelSpec
    concept: ConceptWatch
    data: DataDriftWatch
    live: LiveMetrics
    firing: dict[str, FiringAlert] = field(default_factory=dict)
    data_firing: set[str] = field(default_factory=set)
    """Features whose data-drift alert fires (the watch reports only their return)."""
    expected_error: float | None = None
    """Error rate the serving version showed on its holdout: what "normal" means for it."""
    retrain_in_flight: str | None = None
    """Request id of the drift retrain awaiting a registry decision."""
    last_retrain_at: float = float("-inf")
    predicted: int = 0
    """Predictions of the model seen (any version): the clock of swap latency in samples."""
    labeled: int = 0
    """Labeled predictions of the model seen (any version): the clock of sample cooldowns."""
    last_retrain_labeled: int | None = None
    """`labeled` when the last drift retrain was requested."""
    decision_sequence: int = 0
    """Newest registry decision seen: an older one (history re-read, or a replay) is ignored."""

    def incident(self) -> DriftIncident | None:
        """The firing concept-drift alert, if any."""
        firing = self.firing.get("concept_drift")
        return firing if isinstance(firing, DriftIncident) else None

    def cooled_down(self, now: float) -> bool:
        """Both cooldowns passed since the last drift retrain: the one in seconds and the one
        in labeled predictions (which guards against flapping the same way at any rate)."""
        policy = self.spec.policy
        if now - self.last_retrain_at < policy.retrain_cooldown_seconds:
            return False
        return (self.last_retrain_labeled is None
                or self.labeled - self.last_retrain_labeled >= policy.retrain_cooldown_samples)
