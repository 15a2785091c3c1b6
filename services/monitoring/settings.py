"""Settings of the monitoring service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class MonitoringSettings(CommonSettings):
    """Monitoring reads DRIFTLOOP_* plus the fields below."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore",
                                      populate_by_name=True)

    port: int = Field(default=8004, validation_alias="DRIFTLOOP_MONITORING_PORT")
    """HTTP port for health, metrics and the alert list."""
    group_id: str = Field(default="monitoring", validation_alias="DRIFTLOOP_MONITORING_GROUP")
    """Consumer group on predictions, data.validated and models.lifecycle."""
    max_pending_predictions: int = Field(
        default=100_000, ge=1, validation_alias="DRIFTLOOP_MONITORING_MAX_PENDING_PREDICTIONS")
    """Predictions held waiting for their label, over all models (oldest dropped first and
    counted in `driftloop_monitoring_join_dropped_total`). About 300 bytes each: the default
    bounds the join at ~30 MB. The project's per-model `max_pending_predictions` can only
    lower it."""
    max_pending_labels: int = Field(
        default=100_000, ge=1, validation_alias="DRIFTLOOP_MONITORING_MAX_PENDING_LABELS")
    """Labels held waiting for their prediction (same rules, about 250 bytes each)."""
