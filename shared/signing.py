"""The chain of trust over Kafka: Ed25519 signatures by the service that decided.

Anyone who can write a topic can write any bytes, so authority comes from keys, not
from topics. Training signs what it produced (a run: model, run id, artifact digest,
metrics, holdout, lineage) and each artifact digest; the registry verifies that with
training's *public* key before recording a run, and signs its decisions (model,
version, action, champion, digest, decision sequence, ...) with its own private key;
serving and monitoring verify the registry's signature before acting. A private key
lives only in the service that signs; the others hold public keys.

What is signed is a canonical JSON (sorted keys, no spaces) of an explicit set of
claims, tagged with its kind so a signature over one kind never verifies as another.
Claims are listed here field by field: a field added to an event later is not signed
until it is added below (a verifier ignores what it does not know).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contracts.events import ArtifactRef, ModelLifecycleChanged, ModelTrained
from shared.errors import ConfigError, SignatureInvalid

SIGNERS = ("training", "registry")
"""The services that sign; each has one key pair."""


def canonical(claims: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: sorted keys, no whitespace, ASCII only."""
    return json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=True).encode()


def artifact_claims(digest: str) -> dict[str, Any]:
    return {"kind": "artifact.v1", "digest": digest}


def _artifact(ref: ArtifactRef) -> dict[str, Any]:
    return {"digest": ref.digest, "size_bytes": ref.size_bytes, "format": ref.format}


def run_claims(event: ModelTrained) -> dict[str, Any]:
    """What training vouches for: everything the registry decides on and monitoring uses."""
    data = event.model_dump(mode="json")
    return {"kind": "models.trained.v1", "run_id": event.run_id, "model": event.model,
            "request_id": event.request_id, "artifact": _artifact(event.artifact),
            "metric": event.metric, "metrics": data["metrics"], "holdout": data["holdout"],
            "baseline_version": event.baseline_version,
            "baseline_metrics": data["baseline_metrics"], "lineage": data["lineage"],
            "reference_profile": data["reference_profile"]}


def decision_claims(event: ModelLifecycleChanged) -> dict[str, Any]:
    """What the registry vouches for: everything serving and monitoring act on."""
    data = event.model_dump(mode="json")
    return {"kind": "models.lifecycle.v1", "model": event.model, "version": event.version,
            "action": event.action.value, "champion_version": event.champion_version,
            "sequence": event.sequence, "run_id": event.run_id,
            "request_id": event.request_id, "artifact": _artifact(event.artifact),
            "metrics": data["metrics"], "reference_profile": data["reference_profile"],
            "reason": event.reason, "actor": event.actor, "at": data["at"]}


class Verifier:
    """Checks signatures made by one signer's private key."""

    def __init__(self, public_key: Ed25519PublicKey, signer: str) -> None:
        self._key = public_key
        self.signer = signer

    @classmethod
    def from_pem(cls, pem: bytes, signer: str) -> Verifier:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ConfigError(detail=f"the {signer} public key is not a PEM public key: "
                              f"{exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(detail=f"the {signer} public key is not an Ed25519 key")
        return cls(key, signer)

    def verify(self, claims: dict[str, Any], signature: str | None, what: str) -> None:
        """Raise SignatureInvalid unless `signature` is this signer's over `claims`."""
        if not signature:
            raise SignatureInvalid(what=what, detail=f"it carries no {self.signer} signature")
        try:
            self._key.verify(bytes.fromhex(signature), canonical(claims))
        except (ValueError, InvalidSignature):
            raise SignatureInvalid(what=what, detail=f"the {self.signer} signature does not "
                                   "match its content (forged, tampered, or another key)") from None

    def public_pem(self) -> bytes:
        return self._key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- the events this platform verifies ---------------------------------------------------

    def verify_run(self, event: ModelTrained) -> None:
        self.verify(run_claims(event), event.signature, f"run {event.run_id} of {event.model!r}")

    def verify_decision(self, event: ModelLifecycleChanged) -> None:
        self.verify(decision_claims(event), event.signature,
                    f"decision {event.action.value} {event.model!r} v{event.version}")

    def verify_artifact(self, ref: ArtifactRef) -> None:
        self.verify(artifact_claims(ref.digest), ref.signature, f"artifact {ref.digest}")


class Signer:
    """Signs with one service's private key."""

    def __init__(self, private_key: Ed25519PrivateKey, name: str) -> None:
        self._key = private_key
        self.name = name

    @classmethod
    def from_pem(cls, pem: bytes, name: str) -> Signer:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(detail=f"the {name} signing key is not an unencrypted PEM "
                              f"private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(detail=f"the {name} signing key is not an Ed25519 key")
        return cls(key, name)

    def sign(self, claims: dict[str, Any]) -> str:
        return self._key.sign(canonical(claims)).hex()

    def verifier(self) -> Verifier:
        return Verifier(self._key.public_key(), self.name)

    def sign_run(self, event: ModelTrained) -> ModelTrained:
        return event.model_copy(update={"signature": self.sign(run_claims(event))})

    def sign_decision(self, event: ModelLifecycleChanged) -> ModelLifecycleChanged:
        return event.model_copy(update={"signature": self.sign(decision_claims(event))})

    def sign_artifact(self, digest: str) -> str:
        return self.sign(artifact_claims(digest))


# -- key files -------------------------------------------------------------------------------


def generate_pem_pair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@dataclass(frozen=True, slots=True)
class KeyPairFiles:
    """Where one signer's key pair is: the private file is readable by its owner only."""

    private: Path
    public: Path


def write_key_pair(directory: Path, name: str, overwrite: bool = False) -> KeyPairFiles:
    """Write `<name>.key` (mode 0600) and `<name>.pub` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    files = KeyPairFiles(directory / f"{name}.key", directory / f"{name}.pub")
    if not overwrite and (files.private.exists() or files.public.exists()):
        raise ConfigError(detail=f"{files.private} or {files.public} exists already; remove "
                          "them first (a new key pair invalidates what the old one signed)")
    private, public = generate_pem_pair()
    # Created 0600 from the start: never readable by others, not even for a moment.
    descriptor = os.open(files.private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(private)
    os.chmod(files.private, 0o600)
    files.public.write_bytes(public)
    return files


STATE_SECRET = "monitoring-state.key"
"""The file name of monitoring's changelog secret (HMAC key of its stream state)."""


def write_secret(path: Path, overwrite: bool = False) -> Path:
    """32 random bytes, hex, in a file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise ConfigError(detail=f"{path} exists already; remove it first (a new secret makes "
                          "the state written under the old one unreadable)")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(os.urandom(32).hex())
    os.chmod(path, 0o600)
    return path


def read_secret(path: Path, variable: str) -> bytes:
    """A secret file's bytes (surrounding whitespace stripped), failing with the variable."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(detail=f"cannot read the secret file {path} ({variable}): "
                          f"{exc.strerror}") from None
    if len(secret) < 16:
        raise ConfigError(detail=f"the secret in {path} ({variable}) is shorter than 16 bytes; "
                          "create one with `driftloop keys create`")
    return secret


def ensure_dev_keys(data_dir: Path) -> dict[str, KeyPairFiles]:
    """A development key pair per signer under `<data_dir>/keys`, made once and kept: what the
    embedded quickstart uses (and monitoring's state secret). Each service is then given only
    the files it may hold."""
    directory = data_dir / "keys"
    if not (directory / STATE_SECRET).exists():
        write_secret(directory / STATE_SECRET, overwrite=True)
    pairs = {}
    for name in SIGNERS:
        files = KeyPairFiles(directory / f"{name}.key", directory / f"{name}.pub")
        if not (files.private.exists() and files.public.exists()):
            files = write_key_pair(directory, name, overwrite=True)
        pairs[name] = files
    return pairs


KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "training": ("DRIFTLOOP_TRAINING_SIGNING_KEY_FILE",),
    "registry": ("DRIFTLOOP_REGISTRY_SIGNING_KEY_FILE", "DRIFTLOOP_TRAINING_PUBLIC_KEY_FILE",
                 "DRIFTLOOP_TRAINING_PUBLIC_KEY"),
    "serving": ("DRIFTLOOP_REGISTRY_PUBLIC_KEY_FILE", "DRIFTLOOP_REGISTRY_PUBLIC_KEY",
                "DRIFTLOOP_TRAINING_PUBLIC_KEY_FILE", "DRIFTLOOP_TRAINING_PUBLIC_KEY"),
    "monitoring": ("DRIFTLOOP_REGISTRY_PUBLIC_KEY_FILE", "DRIFTLOOP_REGISTRY_PUBLIC_KEY",
                   "DRIFTLOOP_MONITORING_STATE_KEY_FILE"),
    "ingestion": (),
}
"""Which key variables each service may hold: a private key only where it signs."""

ALL_KEY_VARIABLES = frozenset(v for names in KEY_VARIABLES.values() for v in names)


def child_key_env(service: str, env: dict[str, str],
                  dev_keys: dict[str, KeyPairFiles] | None) -> dict[str, str]:
    """`env` with only the key variables `service` may hold; with `dev_keys` (the embedded
    quickstart) the ones not set by hand point at the development key files."""
    allowed = KEY_VARIABLES.get(service, ())
    result = {k: v for k, v in env.items() if k not in ALL_KEY_VARIABLES or k in allowed}
    if dev_keys is not None:
        files = {"DRIFTLOOP_TRAINING_SIGNING_KEY_FILE": dev_keys["training"].private,
                 "DRIFTLOOP_TRAINING_PUBLIC_KEY_FILE": dev_keys["training"].public,
                 "DRIFTLOOP_REGISTRY_SIGNING_KEY_FILE": dev_keys["registry"].private,
                 "DRIFTLOOP_REGISTRY_PUBLIC_KEY_FILE": dev_keys["registry"].public,
                 "DRIFTLOOP_MONITORING_STATE_KEY_FILE":
                     dev_keys["registry"].private.parent / STATE_SECRET}
        for name, path in files.items():
            inline = name.removesuffix("_FILE")
            if name in allowed and name not in result and inline not in result:
                result[name] = str(path.resolve())
    return result
