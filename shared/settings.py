"""Settings common to every service, from DRIFTLOOP_* environment variables.

Kafka settings are flat (DRIFTLOOP_KAFKA_BOOTSTRAP, ...) because users set
them by hand most often; each service extends `CommonSettings` in its own
services/<name>/settings.py with its port and knobs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError
from shared.signing import KeyPairFiles, Signer, Verifier, ensure_dev_keys
from shared.tokens import TokenEntry

logger = logging.getLogger(__name__)


class CommonSettings(BaseSettings):
    """What every driftloop process reads."""

    # Settings hold secrets (a raw token pasted where its digest belongs, say): a validation
    # error names the variable and the rule, never the value.
    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore",
                                      hide_input_in_errors=True)

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
    signing_key: SecretStr | None = None
    """Removed (it was a shared HMAC secret): set, it stops start-up with what to do instead."""
    training_signing_key_file: Path | None = None
    """Training's Ed25519 private key (PEM, mode 0600). Training only."""
    training_public_key: str | None = None
    """Training's public key (PEM text), for the registry and serving."""
    training_public_key_file: Path | None = None
    """Training's public key as a file (instead of DRIFTLOOP_TRAINING_PUBLIC_KEY)."""
    registry_signing_key_file: Path | None = None
    """The registry's Ed25519 private key (PEM, mode 0600). Registry only."""
    registry_public_key: str | None = None
    """The registry's public key (PEM text), for serving and monitoring."""
    registry_public_key_file: Path | None = None
    """The registry's public key as a file (instead of DRIFTLOOP_REGISTRY_PUBLIC_KEY)."""
    registry_url: str = "http://127.0.0.1:8001"
    """Base URL of the registry API."""
    host: str = "127.0.0.1"
    """Interface this service's HTTP server binds."""
    log_level: str = "INFO"
    """Root log level."""
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest HTTP request body this service reads (bytes); larger ones get 413 before they
    are read. Serving has its own, larger, setting for batches."""

    # -- HTTP auth (shared/auth.py): tokens are stored as sha256, never as themselves --
    auth_tokens: list[TokenEntry] = Field(default_factory=list)
    """Accepted tokens, JSON: [{"name": "alice", "role": "operator", "sha256": "<hex>"}]
    (`driftloop token create` prints an entry). Roles: viewer < operator < admin."""
    auth_tokens_file: Path | None = None
    """A JSON file holding more entries of the same form (a mounted secret, say)."""
    auth_open_reads: bool = True
    """Read-only endpoints (and /metrics) answer without a token; false: they need viewer."""
    auth_open_predict: bool = True
    """Serving's predict answers without a token; false: it needs viewer."""
    auth_local_admin_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Digest of `driftloop up`'s local admin token (<data_dir>/secrets/admin.token); `up`
    sets it for the services it starts."""
    token: SecretStr | None = None
    """The token this process presents to driftloop services (the CLI; a service calling
    the registry when reads are closed). Unset: <data_dir>/secrets/admin.token if present."""

    def refuse_legacy_key(self) -> None:
        """DRIFTLOOP_SIGNING_KEY was a shared HMAC secret that every verifier could sign with."""
        if self.signing_key is not None:
            raise ConfigError(detail=(
                "DRIFTLOOP_SIGNING_KEY is no longer used: artifacts and decisions are signed with "
                "Ed25519 key pairs. Unset it, run `driftloop keys create --out DIR`, and give "
                "training DRIFTLOOP_TRAINING_SIGNING_KEY_FILE, the registry "
                "DRIFTLOOP_REGISTRY_SIGNING_KEY_FILE, and the others the public keys "
                "(DRIFTLOOP_TRAINING_PUBLIC_KEY_FILE, DRIFTLOOP_REGISTRY_PUBLIC_KEY_FILE); "
                "existing versions must be retrained to be served"))

    def _dev_keys(self, variable: str) -> dict[str, KeyPairFiles]:
        """Development keys in the data dir, only when this process runs its own embedded
        broker; with a real cluster every key must be given."""
        if self.kafka_bootstrap:
            raise ConfigError(detail=f"{variable} is not set; it is required with a real Kafka "
                              "cluster (create keys with `driftloop keys create`)")
        return ensure_dev_keys(self.data_dir)

    def signer(self, name: str) -> Signer:
        """The private key of `name` ("training" or "registry"), for that service alone."""
        self.refuse_legacy_key()
        variable = f"DRIFTLOOP_{name.upper()}_SIGNING_KEY_FILE"
        path: Path | None = getattr(self, f"{name}_signing_key_file")
        if path is None:
            path = self._dev_keys(variable)[name].private
        pem = _read_key(path, variable)
        if path.stat().st_mode & 0o077:
            logger.warning("the %s signing key %s is readable by other users: chmod 600 it",
                           name, path)
        return Signer.from_pem(pem, name)

    def verifier(self, name: str) -> Verifier:
        """The public key of `name` ("training" or "registry"), to check what it signed."""
        self.refuse_legacy_key()
        variable = f"DRIFTLOOP_{name.upper()}_PUBLIC_KEY"
        text: str | None = getattr(self, f"{name}_public_key")
        path: Path | None = getattr(self, f"{name}_public_key_file")
        if text:
            pem = text.encode()
        else:
            if path is None:
                path = self._dev_keys(f"{variable} or {variable}_FILE")[name].public
            pem = _read_key(path, f"{variable}_FILE")
        return Verifier.from_pem(pem, name)

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


def _read_key(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(detail=f"cannot read the key file {path} ({variable}): "
                          f"{exc.strerror}") from None


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


CONFIG_EXIT = 2
"""Exit code of a process whose settings must be fixed: restarting it cannot help, so
`driftloop up` does not."""


def settings_problem(exc: ConfigError | ValidationError) -> str:
    """One line that names the setting to fix, for an expected start-up error."""
    if isinstance(exc, ConfigError):
        return str(exc)
    first = exc.errors()[0]
    location = first["loc"]
    name = str(location[0]) if location else "?"
    variable = name if name.startswith("DRIFTLOOP_") else f"DRIFTLOOP_{name.upper()}"
    return f"invalid setting {variable}: {first['msg']}"
