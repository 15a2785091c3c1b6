"""Settings of the monitoring service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.errors import ConfigError
from shared.settings import CommonSettings
from shared.signing import STATE_SECRET, read_secret, write_secret


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
    state_key_file: Path | None = Field(
        default=None, validation_alias="DRIFTLOOP_MONITORING_STATE_KEY_FILE")
    """The secret (a file, mode 0600) that authenticates monitoring's changelog: its joins,
    detectors and alerts survive a restart there, and nothing another writer put in the
    topic is loaded. Monitoring only. Unset with the embedded broker: one in the data dir."""
    checkpoint_seconds: float = Field(
        default=2.0, gt=0, validation_alias="DRIFTLOOP_MONITORING_CHECKPOINT_SECONDS")
    """How often the state is checkpointed to the changelog (and input offsets committed).
    A crash loses nothing: a restarted worker reads its inputs again from the last
    checkpoint, so this bounds how much it re-reads, against the changelog's volume."""

    def state_secret(self) -> bytes:
        """The changelog secret; with a real Kafka cluster it must be given."""
        variable = "DRIFTLOOP_MONITORING_STATE_KEY_FILE"
        path = self.state_key_file
        if path is None:
            if self.kafka_bootstrap:
                raise ConfigError(detail=f"{variable} is not set; it is required with a real "
                                  "Kafka cluster (create it with `driftloop keys create`)")
            path = self.data_dir / "keys" / STATE_SECRET
            if not path.exists():
                write_secret(path)
        return read_secret(path, variable)
