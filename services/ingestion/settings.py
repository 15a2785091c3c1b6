"""Settings of the ingestion service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class IngestionSettings(CommonSettings):
    """Ingestion reads DRIFTLOOP_* plus the fields below."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore",
                                      populate_by_name=True)

    port: int = Field(default=8002, validation_alias="DRIFTLOOP_INGESTION_PORT")
    """HTTP port for health and metrics."""
    group_id: str = Field(default="ingestion", validation_alias="DRIFTLOOP_INGESTION_GROUP")
    """Consumer group on data.labeled."""
