"""The Kafka edge of an online learner: tail the dataset store, ask the registry for the
champion when a snapshot is due, publish the signed snapshot on models.trained.

One task per online model. A lock file under training's state directory keeps it the only
writer of that model's learner, even when a second training process is started on the same
data directory (the lock dies with its process, so a killed learner never blocks the next).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from contracts.events import ModelTrained
from contracts.topics import Topic
from services.training.handlers import Trainer
from services.training.intake import safe_name
from services.training.online import OnlineLearner
from services.training.settings import TrainingSettings
from shared.bus import Bus
from shared.errors import ArtifactIntegrityError, ArtifactNotFound, DependencyUnavailable
from shared.registry_client import fetch_champion
from shared.service import Worker
from shared.tracing import new_trace_id, trace_id_var

logger = logging.getLogger(__name__)


def online_workers(bus: Bus, trainer: Trainer, settings: TrainingSettings) -> dict[str, Worker]:
    """One worker per model that declares `[models.X.online]`, by task name."""

    def worker(name: str) -> Worker:
        def new_learner() -> OnlineLearner:
            return OnlineLearner(name, trainer.project, trainer.datasets, trainer.artifacts,
                                 trainer.signer, settings.data_dir / "training" / "online")

        async def work(stopping: asyncio.Event) -> None:
            await run_learner(bus, new_learner, settings.registry_url, stopping)

        return work

    return {f"online-{name}": worker(name) for name, spec in trainer.project.models.items()
            if spec.online is not None}


def take_lock(path: Path) -> int | None:
    """An exclusive lock held as long as the returned descriptor is open; None if taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def run_learner(bus: Bus, new_learner: Callable[[], OnlineLearner], registry_url: str,
                      stopping: asyncio.Event, poll_seconds: float = 0.1,
                      champion_seconds: float = 0.5) -> None:
    """Learn and snapshot until `stopping`; a fresh learner (restored from its last snapshot)
    each time the worker (re)starts, so a crash mid-step never leaves half a state.

    The learner follows the champion: asked of the registry before new records are learned
    (at most every `champion_seconds`) and always before a snapshot, so a snapshot is
    compared with the champion of the moment."""
    learner = new_learner()
    lock = take_lock(learner.state_path.with_name(f"{safe_name(learner.name)}.lock"))
    while lock is None:
        logger.warning("another process learns %s online; waiting for its lock", learner.name)
        if await _sleep(stopping, 5.0):
            return
        lock = take_lock(learner.state_path.with_name(f"{safe_name(learner.name)}.lock"))
    try:
        pending = await asyncio.to_thread(learner.restore)
        asked = -math.inf
        while not stopping.is_set():
            pause = poll_seconds
            try:
                if pending is not None:
                    await _publish(bus, learner, pending)
                    pending = None
                if await asyncio.to_thread(learner.news):
                    if time.monotonic() - asked >= champion_seconds:
                        asked = await _follow(learner, registry_url)
                    await asyncio.to_thread(learner.catch_up)
                if learner.due():
                    trace_id_var.set(new_trace_id())  # one trace per snapshot, to its swap
                    champion = await fetch_champion(registry_url, learner.name)
                    asked = time.monotonic()
                    pending = await asyncio.to_thread(learner.snapshot, champion)
                    continue  # publish it at once
            except (DependencyUnavailable, OSError) as exc:
                logger.warning("online learner %s waits on a dependency: %s", learner.name, exc)
                pause = 2.0
            except (ArtifactIntegrityError, ArtifactNotFound) as exc:
                # the champion's artifact did not verify: no comparison, so no snapshot; the
                # learner goes on learning and tries again (the registry may move on)
                logger.error("online learner %s cannot score the champion: %s", learner.name,
                             exc)
                pause = 5.0
            if await _sleep(stopping, pause):
                return
    finally:
        os.close(lock)


async def _follow(learner: OnlineLearner, registry_url: str) -> float:
    """Follow the registry's champion; when it cannot be asked or loaded, the learner keeps
    learning and comparing with the one it follows. Returns when it was asked (set 5 s
    ahead after a failure, so a lasting one is retried, not logged at every poll)."""
    try:
        champion = await fetch_champion(registry_url, learner.name)
        await asyncio.to_thread(learner.follow, champion)
    except DependencyUnavailable as exc:
        logger.warning("online learner %s cannot ask for the champion: %s", learner.name, exc)
        return time.monotonic() + 5.0
    except (ArtifactIntegrityError, ArtifactNotFound) as exc:
        logger.error("online learner %s cannot load the champion: %s", learner.name, exc)
        return time.monotonic() + 5.0
    return time.monotonic()


async def _publish(bus: Bus, learner: OnlineLearner, run: ModelTrained) -> None:
    await bus.publish(Topic.MODELS_TRAINED, run, key=run.model, ce_id=run.run_id)
    await asyncio.to_thread(learner.published, run)


async def _sleep(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until stopping; True when stopping."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        return False
    return True
