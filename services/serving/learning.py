"""Serving that goes on learning: `[models.X.serving] learn = true`.

Between two registry decisions a served version would otherwise stay as it was gated, while
labels keep arriving; after a drift every prediction it answers until the next swap is
stale. So serving tails the dataset store's log, as the online learner does, and learns each
record logged after the data the served version was trained on, in log order, into that
version's estimator: the served model is then never older than the newest stored label,
which is what an in-process River loop has (measured in bench/loop).

What answered stays nameable: the version says which signed artifact, `learned_through` in
the prediction event says up to which log position it had learned since, and the log is
immutable, so the exact model behind any prediction can be rebuilt. Every replica learns the
same records in the same order from the same artifact, so replicas agree.

On a swap the new version first learns, off the request path and before it serves, what was
logged after its own training data (at most `replay_records` of the newest). Its training
data's end comes from its lineage in the registry; if the registry cannot say, it learns
from the log's current end on.

Concurrency. Learning runs on the event loop in chunks, so predictions on the loop never
meet it; predictions of large bodies run in worker threads and hold the version's
`LearnGuard` as readers, and the loop learns only while no reader is in (it never waits:
it tries again at the next poll).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from contracts.events import Lineage
from shared.datasets import DatasetStore
from shared.errors import DependencyUnavailable, SnapshotNotFound
from shared.project import Project
from shared.registry_client import fetch_version
from shared.replay import learn_logged, learn_record

if TYPE_CHECKING:
    from services.serving.models import ModelManager

logger = logging.getLogger(__name__)

LEARNED = Counter("driftloop_serving_learned_records_total",
                  "Records serving learned into a served version after it was loaded "
                  "(replayed at a swap or tailed from the dataset log).", ["model"])


class LearnGuard:
    """Readers in worker threads exclude the writer on the event loop; the writer never
    blocks (it skips a turn while a reader is in)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._lock:
            self._readers += 1
        try:
            yield
        finally:
            with self._lock:
                self._readers -= 1

    @contextmanager
    def writing(self) -> Iterator[bool]:
        """True while this block may learn (no reader in, none can enter), else False."""
        with self._lock:
            yield self._readers == 0


@dataclass(slots=True)
class Learned:
    """How far one loaded version's estimator has learned the dataset log."""

    through: int
    """The first log position it has not learned."""
    guard: LearnGuard = field(default_factory=LearnGuard)


LineageOf = Callable[[str, int], Awaitable[Lineage | None]]
"""(model, version) -> the version's lineage, None when unknown; DependencyUnavailable when
it cannot be asked."""


def registry_lineage(registry_url: str) -> LineageOf:
    """Lineage as the registry's API records it."""

    async def lineage(model: str, version: int) -> Lineage | None:
        view = await fetch_version(registry_url, model, version)
        return None if view is None else view.lineage

    return lineage


class ServingLearner:
    """Learns the served versions of every model that declares `serving.learn`."""

    def __init__(self, project: Project, datasets: DatasetStore, lineage: LineageOf,
                 chunk: int = 16) -> None:
        self.project = project
        self.datasets = datasets
        self.lineage = lineage
        self.chunk = chunk
        """Records learned on the event loop before it is handed back to requests."""
        self.models = frozenset(name for name, spec in project.models.items()
                                if spec.serving.learn)

    # -- at a swap --------------------------------------------------------------------------

    async def prepare(self, model: str, version: int, estimator: Any) -> Learned | None:
        """Before `version` serves: learn what was logged after its training data. None for
        a model that does not learn in serving."""
        if model not in self.models:
            return None
        start = await self._end_of_training(model, version)
        return await asyncio.to_thread(self._replay, model, version, estimator, start)

    async def _end_of_training(self, model: str, version: int) -> int | None:
        try:
            lineage = await self.lineage(model, version)
        except DependencyUnavailable as exc:
            logger.warning("cannot ask the registry for the lineage of %s v%d (%s): it learns "
                           "from the log's end on", model, version, exc)
            return None
        if lineage is None:
            return None
        try:
            snapshot = await asyncio.to_thread(self.datasets.open_snapshot, lineage.dataset,
                                               lineage.snapshot_id)
        except SnapshotNotFound:
            logger.warning("training snapshot of %s v%d not in this dataset store: it learns "
                           "from the log's end on", model, version)
            return None
        return await asyncio.to_thread(self.datasets.end_of, snapshot)

    def _replay(self, model: str, version: int, estimator: Any, start: int | None) -> Learned:
        spec = self.project.model(model)
        replayed = learn_logged(estimator, model, self.datasets, spec.dataset, start,
                                spec.serving.replay_records)
        LEARNED.labels(model).inc(replayed.learned)
        if replayed.dropped:
            logger.warning("%s v%d: %d records logged after its training data were older than "
                           "the newest %d (serving.replay_records): not learned", model,
                           version, replayed.dropped, spec.serving.replay_records)
        logger.info("%s v%d learned %d records logged after its training data", model,
                    version, replayed.learned, extra={"learned_through": replayed.through})
        return Learned(through=replayed.through)

    # -- while serving ----------------------------------------------------------------------

    async def run(self, models: ModelManager, stopping: asyncio.Event,
                  poll_seconds: float = 0.05) -> None:
        """Tail the log and learn each new record into the version serving it, until
        `stopping`."""
        while not stopping.is_set():
            for model in self.models:
                # A short chunk means caught up, a reader is in, or nothing serves: next poll.
                while self.step(models, model) == self.chunk:
                    await asyncio.sleep(0)  # let requests in between chunks
            try:
                await asyncio.wait_for(stopping.wait(), poll_seconds)
            except TimeoutError:
                pass

    def pending(self, models: ModelManager, model: str) -> int:
        """Records logged that the version serving `model` has not learned (for status and
        tests; the loop itself just learns until a chunk comes back short)."""
        served = models.peek(model)
        if served is None or served.learned is None:
            return 0
        logged = sum(s.count for s in self.datasets.segments(self.project.model(model).dataset))
        return logged - served.learned.through

    def step(self, models: ModelManager, model: str) -> int:
        """Learn up to `chunk` new records into the version serving `model`; the count."""
        served = models.peek(model)
        if served is None or served.learned is None:
            return 0
        learned = served.learned
        count = 0
        with learned.guard.writing() as free:
            if not free:
                return 0
            dataset = self.project.model(model).dataset
            for position, record in self.datasets.records_from(dataset, learned.through):
                learn_record(served.estimator, record, model)
                learned.through = position + 1
                count += 1
                if count >= self.chunk:
                    break
        LEARNED.labels(model).inc(count)
        return count

