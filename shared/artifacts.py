"""The artifact store: model bytes addressed by sha256 and signed with HMAC.

A pickle is code, so `load` verifies the bytes against the digest and the
signature against the platform key before unpickling; anything that does not
match is refused with `ArtifactIntegrityError`.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from pathlib import Path
from typing import Any

from contracts.events import ArtifactRef
from shared.errors import ArtifactIntegrityError, ArtifactNotFound
from shared.files import atomic_write


class ArtifactStore:
    """Content-addressed files under `root`; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path, signing_key: bytes) -> None:
        self.root = root
        self._key = signing_key

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.pkl"

    def sign(self, digest: str) -> str:
        return hmac.new(self._key, digest.encode(), hashlib.sha256).hexdigest()

    def put(self, data: bytes) -> ArtifactRef:
        """Store bytes under their sha256 (idempotent) and return a signed reference."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            atomic_write(target, data)
        return ArtifactRef(digest=digest, signature=self.sign(digest), size_bytes=len(data))

    def save_model(self, model: Any) -> ArtifactRef:
        return self.put(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))

    def verify_signature(self, ref: ArtifactRef) -> None:
        """Raise ArtifactIntegrityError unless the reference was signed with our key."""
        if not hmac.compare_digest(self.sign(ref.digest), ref.signature):
            raise ArtifactIntegrityError(digest=ref.digest,
                                         detail="signature does not match the signing key")

    def read_verified(self, ref: ArtifactRef) -> bytes:
        """The artifact's bytes, only if they match the digest and the signature."""
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
        return pickle.loads(data)  # noqa: S301 - verified against digest and HMAC above
