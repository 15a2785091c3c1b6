"""The models serving holds: declared ones only, verified before loading, swapped atomically,
never rolled back by a replayed older decision."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from contracts.base import utcnow
from contracts.events import ArtifactRef
from services.serving.learning import Learned
from shared.artifacts import ArtifactStore
from shared.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    ModelNotReady,
    StaleDecision,
    UndeclaredModel,
)

logger = logging.getLogger(__name__)

LOADS = Counter("driftloop_serving_model_loads_total", "Model load attempts.", ["outcome"])

Prepare = Callable[[str, int, Any], Awaitable[Learned | None]]
"""Run on a freshly loaded estimator before it serves (model, version, estimator): serving's
learner replays what was logged after its training data (services/serving/learning.py)."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One servable version; replaced whole, never mutated (but for the estimator of a
    model that learns in serving, which learns in place: see `learned`)."""

    name: str
    version: int
    estimator: Any
    digest: str
    loaded_at: datetime
    learned: Learned | None = None
    """For a model that learns in serving: how far this estimator has learned the dataset
    log since it was loaded (the estimator itself is then updated in place)."""


class ModelManager:
    """The champion of each model. A request reads one reference: the old model or the new,
    never neither, because a swap is a single dict assignment done after loading."""

    def __init__(self, artifacts: ArtifactStore, declared: Iterable[str],
                 prepare: Prepare | None = None) -> None:
        self.artifacts = artifacts
        self.declared = frozenset(declared)
        self.prepare = prepare
        self._current: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._swaps: dict[str, int] = {}
        self._sequences: dict[str, int] = {}

    def get(self, model: str) -> LoadedModel:
        try:
            return self._current[model]
        except KeyError:
            raise ModelNotReady(model=model) from None

    def peek(self, model: str) -> LoadedModel | None:
        """The version serving `model`, None before the first."""
        return self._current.get(model)

    def loaded(self) -> list[LoadedModel]:
        return list(self._current.values())

    def swaps(self, model: str) -> int:
        """How many times `model` was swapped: a mark to load "only if nothing newer came"."""
        return self._swaps.get(model, 0)

    def sequence(self, model: str) -> int:
        """Sequence of the newest registry decision applied to `model` (0: none known)."""
        return self._sequences.get(model, 0)

    async def load(self, model: str, version: int, artifact: ArtifactRef,
                   unless_swapped_since: int | None = None, sequence: int | None = None) -> bool:
        """Verify and unpickle in a thread, then swap; False (old model kept) if refused, if
        the model was swapped since the `unless_swapped_since` mark (that one is newer), or if
        decision `sequence` was applied already.

        Raises `UndeclaredModel` for a model the project does not declare, and
        `StaleDecision` for a decision older than one applied (a replay must not roll back).
        The artifact's digest must come from a verified source (a registry decision whose
        signature was checked, or the registry API); the bytes are checked against it.
        """
        if model not in self.declared:
            raise UndeclaredModel(model=model)
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            if unless_swapped_since is not None and self.swaps(model) != unless_swapped_since:
                return False
            applied = self.sequence(model)
            if sequence is not None and applied and sequence <= applied:
                if sequence == applied:
                    return False  # the same decision again (a re-announcement): nothing to do
                raise StaleDecision(sequence=sequence, model=model, version=version,
                                    applied=applied)
            current = self._current.get(model)
            try:
                if (current is not None and current.digest == artifact.digest
                        and current.learned is None):
                    # Same bytes under another version: re-check the signature, reuse them
                    # (not an estimator that learned since: it is no longer those bytes).
                    self.artifacts.verify_signature(artifact)
                    estimator = current.estimator
                else:
                    estimator = await asyncio.to_thread(self.artifacts.load_model, artifact)
            except (ArtifactIntegrityError, ArtifactNotFound) as exc:
                LOADS.labels("refused").inc()
                logger.error("refused %s v%d: %s; still serving %s", model, version, exc,
                             f"v{current.version}" if current else "nothing")
                return False
            learned = None if self.prepare is None else await self.prepare(model, version,
                                                                             estimator)
            self._current[model] = LoadedModel(model, version, estimator, artifact.digest,
                                               utcnow(), learned)
            self._swaps[model] = self.swaps(model) + 1
            if sequence is not None:
                self._sequences[model] = sequence
            LOADS.labels("loaded").inc()
            logger.info("now serving %s v%d", model, version,
                        extra={"digest": artifact.digest})
            return True
