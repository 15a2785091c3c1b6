"""Settings of the serving service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class ServingSettings(CommonSettings):
    """Serving reads DRIFTLOOP_* plus the fields below."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore",
                                      populate_by_name=True)

    port: int = Field(default=8000, validation_alias="DRIFTLOOP_SERVING_PORT")
    """HTTP port of the inference API."""
    prediction_delivery: Literal["fast", "acked"] = Field(
        default="fast", validation_alias="DRIFTLOOP_SERVING_PREDICTION_DELIVERY")
    """"fast": answer before the broker acknowledged the prediction events (a kill -9 loses
    at most the pending ones, see `outbox_capacity`); "acked": answer only after the broker
    acknowledged every prediction event of the request (a kill -9 loses nothing answered)."""
    outbox_capacity: int = Field(default=10_000, ge=1,
                                 validation_alias="DRIFTLOOP_SERVING_OUTBOX_CAPACITY")
    """Prediction events answered but not yet acknowledged by the broker, at most. At this
    bound new requests wait (`outbox_wait_seconds`), then get 503: nothing is dropped. In fast
    mode a kill -9 loses at most this many plus one request's batch, minus one."""
    outbox_wait_seconds: float = Field(default=2.0, ge=0,
                                       validation_alias="DRIFTLOOP_SERVING_OUTBOX_WAIT_SECONDS")
    """How long a request waits for room in a full outbox before 503 with Retry-After."""
    outbox_drain_seconds: float = Field(default=60.0, gt=0,
                                        validation_alias="DRIFTLOOP_SERVING_OUTBOX_DRAIN_SECONDS")
    """On SIGTERM, how long to wait for the broker to acknowledge every pending event; what
    is still pending then is logged as lost (the broker is down: its own 40 s request
    timeout has already failed those batches by then)."""
    max_batch_instances: int = Field(default=1_000, ge=1, le=10_000,
                                     validation_alias="DRIFTLOOP_SERVING_MAX_BATCH_INSTANCES")
    """Instances per predict call, at most (more: 422 naming the limit)."""
    inline_body_bytes: int = Field(default=16_384, ge=0,
                                   validation_alias="DRIFTLOOP_SERVING_INLINE_BODY_BYTES")
    """Bodies up to this size are parsed and predicted on the event loop; larger ones in a
    worker thread, so a big batch never stalls other requests."""
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024,
                                   validation_alias="DRIFTLOOP_SERVING_MAX_REQUEST_BYTES")
    """Largest predict body (bytes): room for a batch of 10,000 instances of a few dozen
    features; larger bodies get 413 before they are read."""
