"""The error tree of driftloop. Core errors know nothing of HTTP or Kafka.

    DriftloopError
    ├── ConfigError                 a setting or the project file is unusable
    │   ├── BrokerPortInUse
    │   └── PortInUse
    ├── InvalidInput                poison: the input itself is wrong (→ 422 / dead letter)
    │   ├── InvalidRecord
    │   ├── InvalidFeatures
    │   ├── UnknownDataset
    │   ├── ConflictingRecord       a known record id sent again with other content
    │   ├── PublishRefused          the broker refuses this message itself (too large, …)
    │   ├── UndeclaredModel          an event names a model the project file does not declare
    │   ├── SignatureInvalid         forged or tampered control event: never acted on
    │   ├── StaleDecision            a replayed registry decision older than one applied
    │   └── RetrainRefused           a training request over its model's retrain budget
    ├── NotFound                    (→ 404)
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   ├── SnapshotNotFound
    │   └── ArtifactNotFound
    ├── Conflict                    (→ 409)
    │   ├── PromotionRefused
    │   └── ModelNotReady
    ├── AuthError                   the caller may not do this (→ 401 / 403)
    │   ├── Unauthenticated         no valid bearer token
    │   └── Forbidden               a valid token whose role is too weak
    ├── ArtifactIntegrityError      bytes do not match digest or signature: never loaded
    └── DependencyUnavailable       retryable: back off and try again

The HTTP edge maps these to status codes in one table (shared/http_errors.py);
the Kafka edge treats `InvalidInput` as poison (dead-letter, commit, go on) and
`DependencyUnavailable` as retryable.
"""

from __future__ import annotations

from typing import Any


class DriftloopError(Exception):
    """Base of every driftloop error; subclasses build their message from keywords."""

    template = "{detail}"

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        super().__init__(self.template.format(**fields))


class ConfigError(DriftloopError):
    """A setting or the project file cannot be used as given."""


class BrokerPortInUse(ConfigError):
    template = ("cannot start the embedded broker: {host}:{port} is already in use. Set "
                "DRIFTLOOP_EMBEDDED_BROKER_PORT to a free port, or point DRIFTLOOP_KAFKA_BOOTSTRAP "
                "at the broker that is listening there.")


class PortInUse(ConfigError):
    template = "port {port} for {service} is in use on {host}: set {variable} to a free port"


class UnreadableInput(DriftloopError):
    """A file handed to the CLI holds something that is not a record."""

    template = "{where}: {detail}"


class InvalidInput(DriftloopError):
    """The input is wrong in itself; retrying cannot help."""

    def __init__(self, *, errors: list[tuple[str, str]] | None = None, **fields: Any) -> None:
        self.errors = errors or []
        super().__init__(**fields)


class InvalidRecord(InvalidInput):
    template = "record does not match dataset {dataset!r}: {detail}"


class InvalidFeatures(InvalidInput):
    template = "{detail}"


class InvalidFeedback(InvalidInput):
    """POST /v1/feedback's body cannot be taken as sent."""

    template = "invalid feedback: {detail}"


class UnknownWindow(InvalidInput):
    template = "no live window of {window}s for model {model!r}; configured: {known}"


class UnknownDataset(InvalidInput):
    template = "unknown dataset {dataset!r}; declared datasets: {known}"


class ConflictingRecord(InvalidInput):
    template = ("duplicate id with different content: record {record_id} of dataset "
                "{dataset!r} was already ingested with other values; the first is kept")


class PublishRefused(InvalidInput):
    """The broker refuses the message itself: retrying the same bytes cannot help, so the
    Kafka edge treats it as poison, never as "broker unavailable"."""

    template = "the broker refused a {topic} message: {detail}"


class UndeclaredModel(InvalidInput):
    template = "model {model!r} is not declared in the project file; refused"


class SignatureInvalid(InvalidInput):
    template = "{what} refused: {detail}"


class StaleDecision(InvalidInput):
    template = ("decision #{sequence} about {model!r} v{version} is older than decision "
                "#{applied} already applied: a replay, refused")


class RetrainRefused(InvalidInput):
    template = "training request {request_id} for {model!r} refused: {detail}"


class NotFound(DriftloopError):
    """The thing asked for does not exist."""


class ModelNotFound(NotFound):
    template = "model {model!r} is not declared in the project file"


class VersionNotFound(NotFound):
    template = "model {model!r} has no version {version}"


class SnapshotNotFound(NotFound):
    template = "snapshot {snapshot_id} does not exist in the dataset store"


class ArtifactNotFound(NotFound):
    template = "artifact {digest} is not in the artifact store"


class Conflict(DriftloopError):
    """The request is valid but the current state does not allow it."""


class PromotionRefused(Conflict):
    template = "cannot promote {model!r} v{version}: {detail}"


class ModelNotReady(Conflict):
    template = "model {model!r} has no version serving yet"


class AuthError(DriftloopError):
    """The caller is not known, or not allowed; the message never holds a token."""


class Unauthenticated(AuthError):
    template = "{detail}"


class Forbidden(AuthError):
    template = "{detail}"


class ArtifactIntegrityError(DriftloopError):
    template = "artifact {digest} refused: {detail}"


class DependencyUnavailable(DriftloopError):
    template = "{dependency} unavailable: {detail}"
