"""Settings of the serving service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class ServingSettings(CommonSettings):
    """Serving reads DRIFTLOOP_* plus the fields below."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore",
                                      populate_by_name=True)

    port: int = Field(default=8000, validation_alias="DRIFTLOOP_SERVING_PORT")
    """HTTP port of the inference API."""
    outbox_capacity: int = Field(default=100_000, ge=1,
                                 validation_alias="DRIFTLOOP_SERVING_OUTBOX_CAPACITY")
    """Prediction events queued for Kafka before new ones are dropped (and counted)."""
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024,
                                   validation_alias="DRIFTLOOP_SERVING_MAX_REQUEST_BYTES")
    """Largest predict body (bytes): room for a batch of 10,000 instances of a few dozen
    features; larger bodies get 413 before they are read."""
