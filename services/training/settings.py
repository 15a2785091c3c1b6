"""Settings of the training service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class TrainingSettings(CommonSettings):
    """Training reads DRIFTLOOP_* plus the fields below."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore",
                                      populate_by_name=True)

    port: int = Field(default=8003, validation_alias="DRIFTLOOP_TRAINING_PORT")
    """HTTP port for health and metrics."""
    group_id: str = Field(default="training", validation_alias="DRIFTLOOP_TRAINING_GROUP")
    """Consumer group on training.requests and data.validated."""
    window_wait_seconds: float = Field(default=180.0, ge=0,
                                       validation_alias="DRIFTLOOP_TRAINING_WINDOW_WAIT_SECONDS")
    """How long a parked request waits for its window's min_records before training on what is
    there (other requests go on meanwhile)."""
    min_training_records: int = Field(default=20, ge=2,
                                      validation_alias="DRIFTLOOP_TRAINING_MIN_RECORDS")
    """Below this many records a request is rejected rather than trained."""
