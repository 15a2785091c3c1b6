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
