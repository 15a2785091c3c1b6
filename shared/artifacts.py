"""The artifact store: model bytes addressed by sha256, signed by training (Ed25519).

A pickle is code, so `load_model` checks the bytes against the digest — a digest that the
caller got from a verified source (the registry's signed decision, or the registry API) —
and, when the store has training's public key, training's signature over that digest,
before unpickling; anything that does not match is refused with `ArtifactIntegrityError`.
Only training holds the private key, so only training can add a loadable artifact.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

from contracts.events import ArtifactRef
from shared.errors import ArtifactIntegrityError, ArtifactNotFound, ConfigError, SignatureInvalid
from shared.files import atomic_write
from shared.signing import Signer, Verifier


class ArtifactStore:
    """Content-addressed files under `root`; writes are atomic (temp file + rename).

    `signer` (training only) signs what is stored; `verifier` (training's public key)
    checks the signature of what is loaded.
    """

    def __init__(self, root: Path, *, signer: Signer | None = None,
                 verifier: Verifier | None = None) -> None:
        self.root = root
        self._signer = signer
        self._verifier = verifier if verifier is not None else (
            signer.verifier() if signer is not None else None)

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.pkl"

    def put(self, data: bytes) -> ArtifactRef:
        """Store bytes under their sha256 (idempotent) and return a signed reference."""
        if self._signer is None:
            raise ConfigError(detail="this artifact store has no signing key (only training "
                              "stores artifacts)")
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            atomic_write(target, data)
        return ArtifactRef(digest=digest, signature=self._signer.sign_artifact(digest),
                           size_bytes=len(data))

    def save_model(self, model: Any) -> ArtifactRef:
        return self.put(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))

    def verify_signature(self, ref: ArtifactRef) -> None:
        """Raise ArtifactIntegrityError unless training signed this digest."""
        if self._verifier is None:
            return
        try:
            self._verifier.verify_artifact(ref)
        except SignatureInvalid as exc:
            raise ArtifactIntegrityError(digest=ref.digest,
                                         detail=f"not signed by training ({exc})") from None

    def read_verified(self, ref: ArtifactRef) -> bytes:
        """The artifact's bytes, only if they hash to the digest (and it is signed)."""
        self.verify_signature(ref)
        try:
            data = self.path(ref.digest).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound(digest=ref.digest) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.digest:
            raise ArtifactIntegrityError(digest=ref.digest,
                                         detail=f"content hashes to {actual}, not to its address")
        return data

    def load_model(self, ref: ArtifactRef) -> Any:
        """Verify, then unpickle."""
        data = self.read_verified(ref)
        return pickle.loads(data)  # noqa: S301 - verified against digest and signature above
