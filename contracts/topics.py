"""The topic catalogue: every topic name, once."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    """Default topic names (a configurable prefix is prepended at runtime)."""

    DATA_LABELED = "data.labeled"
    DATA_VALIDATED = "data.validated"
    DATA_REJECTED = "data.rejected"
    TRAINING_REQUESTS = "training.requests"
    MODELS_TRAINED = "models.trained"
    MODELS_LIFECYCLE = "models.lifecycle"
    PREDICTIONS = "predictions"
    FEEDBACK = "feedback"
    ALERTS = "alerts"

    def qualified(self, prefix: str = "") -> str:
        """The name on the broker: the prefix (e.g. ``staging.``) followed by the default."""
        return f"{prefix}{self.value}"
