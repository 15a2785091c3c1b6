"""Settings common to every service, from DRIFTLOOP_* environment variables.

Kafka settings are flat (DRIFTLOOP_KAFKA_BOOTSTRAP, ...) because users set
them by hand most often; each service extends `CommonSettings` in its own
services/<name>/settings.py with its port and knobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError

DEV_SIGNING_KEY = "driftloop-dev-signing-key"


class CommonSettings(BaseSettings):
    """What every driftloop process reads."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore")

    config: Path = Field(default=Path("driftloop.toml"))
    """Project file declaring datasets, models, monitors and policies."""
    data_dir: Path = Field(default=Path(".driftloop"))
    """Root of the dataset store, the artifact store and the default registry database."""
    kafka_bootstrap: str | None = None
    """Bootstrap servers of an existing cluster. Unset: an embedded broker is started."""
    kafka_topic_prefix: str = ""
    """Prepended to every topic name (e.g. 'staging.')."""
    kafka_partitions: int = Field(default=3, ge=1)
    """Partitions for topics driftloop creates."""
    kafka_replication_factor: int = Field(default=1, ge=1)
    """Replication factor for topics driftloop creates."""
    kafka_security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    kafka_sasl_mechanism: str | None = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 when SASL is used."""
    kafka_sasl_username: str | None = None
    """SASL user."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password."""
    kafka_ssl_cafile: Path | None = None
    """CA bundle for SSL."""
    embedded_broker_host: str = "127.0.0.1"
    """Interface the embedded broker listens on."""
    embedded_broker_port: int = Field(default=9092, ge=1, le=65535)
    """Port of the embedded broker."""
    signing_key: SecretStr = SecretStr(DEV_SIGNING_KEY)
    """Key that signs model artifacts; must be set when using a real cluster."""
    registry_url: str = "http://127.0.0.1:8001"
    """Base URL of the registry API."""
    host: str = "127.0.0.1"
    """Interface this service's HTTP server binds."""
    log_level: str = "INFO"
    """Root log level."""
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest HTTP request body this service reads (bytes); larger ones get 413 before they
    are read. Serving has its own, larger, setting for batches."""

    def signing_key_bytes(self) -> bytes:
        """The artifact signing key, refused when it is unsafe for the cluster in use.

        Called by the services that sign or verify (training, serving) at start-up; other
        processes (the CLI, say) need no key.
        """
        key = self.signing_key.get_secret_value()
        if len(key) < 16:
            raise ConfigError(detail="DRIFTLOOP_SIGNING_KEY must be at least 16 characters")
        if self.kafka_bootstrap and key == DEV_SIGNING_KEY:
            raise ConfigError(detail="DRIFTLOOP_SIGNING_KEY must be set to a secret of your own "
                              "when DRIFTLOOP_KAFKA_BOOTSTRAP points at a real cluster (the "
                              "development key is public, so anyone could sign a model)")
        return key.encode()

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by every aiokafka client."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile is not None:
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(cafile=str(self.kafka_ssl_cafile))
        return options


def client_bootstrap(settings: CommonSettings) -> str:
    """Where a client (the CLI) finds Kafka: the configured cluster, else the embedded broker
    that a running `make up` listens on."""
    return settings.kafka_bootstrap or (
        f"{settings.embedded_broker_host}:{settings.embedded_broker_port}")


def require_bootstrap(settings: CommonSettings) -> str:
    """The bootstrap address, failing fast with the variable to set when there is none."""
    if not settings.kafka_bootstrap:
        raise ConfigError(detail="no Kafka cluster: set DRIFTLOOP_KAFKA_BOOTSTRAP")
    return settings.kafka_bootstrap
