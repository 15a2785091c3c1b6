"""Kafka edge of training: requests in (accepted, refused, or parked), candidates out;
data.validated counts toward the first training of each model and wakes parked requests.

Intake never waits: a request for an undeclared model or over its model's retrain budget
is dead-lettered at once (the budget refusal is also alerted); any other request is
parked on disk before its offset is committed. One worker trains parked requests in
arrival order as soon as their window holds `min_records` (or their wait ran out); a drift
request of a model with `policy.retrain_windows` is trained as a ladder of progressive
challengers, one rung per window size, and stays parked until its ladder ends.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import timedelta
from typing import cast

from prometheus_client import Counter

from contracts.base import utcnow
from contracts.events import ModelTrained, RecordRejected, RecordValidated, TrainingRequested
from contracts.http import ModelVersionView
from contracts.topics import Topic
from services.training.handlers import Trainer, against_baseline
from services.training.intake import (
    ParkedRequest,
    RequestQueue,
    RetrainBudget,
    park,
    refusal_alert,
)
from services.training.settings import TrainingSettings
from shared.bus import Bus
from shared.consumer import BatchHandler, Delivery, Rejection, per_event
from shared.envelope import build_headers
from shared.errors import DependencyUnavailable, InvalidInput, RetrainRefused, UndeclaredModel
from shared.metrics import DEAD_LETTERS
from shared.registry_client import fetch_champion
from shared.tracing import trace_id_var

logger = logging.getLogger(__name__)

REQUESTS = Counter("driftloop_training_requests_total", "Training requests by outcome.",
                   ["outcome"])
MAX_ATTEMPTS = 5


class Intake:
    """The durable state between the request consumer and the training worker."""

    def __init__(self, trainer: Trainer, settings: TrainingSettings) -> None:
        state = settings.data_dir / "training"
        self.trainer = trainer
        self.settings = settings
        self.queue = RequestQueue(state / "queue")
        self.budget = RetrainBudget(state / "budget")
        self.wake = asyncio.Event()


def request_handler(bus: Bus, intake: Intake) -> BatchHandler:
    """Accept (park) or refuse each request; never wait for data here."""
    trainer = intake.trainer

    async def handle(delivery: Delivery) -> None:
        request = cast(TrainingRequested, delivery.event)
        if request.model not in trainer.project.models:
            REQUESTS.labels("undeclared").inc()
            raise UndeclaredModel(model=request.model)
        if intake.queue.contains(request.request_id):
            return  # accepted before (a replay): the worker has it
        done = trainer.runs(request.request_id)
        if done:  # trained (every rung of its ladder) and left the queue: publish again
            logger.info("request %s already trained as %s; re-publishing", request.request_id,
                        ", ".join(run.run_id for run in done))
            for run in done:
                await bus.publish(Topic.MODELS_TRAINED, run, key=run.model, ce_id=run.run_id)
            return
        limit = trainer.project.models[request.model].policy.max_retrains_per_hour
        budget = intake.budget
        if not budget.accepted(request.model, request.request_id):
            used = budget.used(request.model)
            if used >= limit:
                REQUESTS.labels("over_budget").inc()
                refused = RetrainRefused(
                    request_id=request.request_id, model=request.model,
                    detail=f"retrain budget used: {used} of {limit} per hour "
                           "(policy.max_retrains_per_hour)")
                await bus.publish(Topic.ALERTS, refusal_alert(request, str(refused), used, limit),
                                  key=request.model, ce_id=f"training-refused/{request.request_id}")
                raise refused
        record = delivery.record
        parked = park(request, record.topic, record.partition, record.offset,
                      record.key.decode("utf-8", "replace") if record.key else None,
                      delivery.envelope.trace_id)
        try:  # both durable before the offset is committed
            await asyncio.to_thread(budget.record, request.model, request.request_id)
            await asyncio.to_thread(intake.queue.put, parked)
        except OSError as exc:
            raise DependencyUnavailable(dependency="training state", detail=str(exc)) from exc
        REQUESTS.labels("accepted").inc()
        rungs = trainer.rungs(request)
        logger.info("accepted %s for %s (%s); parked until its window holds %d records%s",
                    request.request_id, request.model, request.reason.value,
                    rungs[0] if rungs else request.window.min_records,
                    f" (progressive challengers on {rungs})" if rungs else "")
        intake.wake.set()

    return per_event(handle)


async def train_parked(bus: Bus, intake: Intake, stopping: asyncio.Event,
                       poll_seconds: float = 0.5) -> None:
    """The training worker: train each parked request whose window is ready, oldest first."""
    while not stopping.is_set():
        intake.wake.clear()
        pause = poll_seconds
        for parked in await asyncio.to_thread(intake.queue.waiting):
            if stopping.is_set():
                return
            try:
                await _try(bus, intake, parked)
            except DependencyUnavailable as exc:
                logger.warning("training of %s waits on a dependency: %s",
                               parked.request.request_id, exc)
                pause = max(poll_seconds, 2.0)  # keep it parked; try again a little later
                break
        try:
            await asyncio.wait_for(intake.wake.wait() if pause == poll_seconds
                                   else stopping.wait(), pause)
        except TimeoutError:
            pass


async def _try(bus: Bus, intake: Intake, parked: ParkedRequest) -> None:
    """Train one parked request if its window is ready; it leaves the queue only once its
    candidate is published (every candidate of its ladder) or it is refused."""
    trace_id_var.set(parked.trace_id)
    rungs = intake.trainer.rungs(parked.request)
    if rungs:
        next_rung: ParkedRequest | None = parked
        while next_rung is not None:  # a rung whose data is already there trains at once
            next_rung = await _climb(bus, intake, next_rung, rungs)
        return
    trainer, request = intake.trainer, parked.request
    done = trainer.completed(request.request_id)
    if done is None:
        have = await _window_records(intake, request)
        if have < request.window.min_records and not _waited_out(intake, parked):
            return
        if have < request.window.min_records:
            logger.warning("window of %s has %d of %d records after %.0fs; training on "
                           "those", request.request_id, have, request.window.min_records,
                           intake.settings.window_wait_seconds)
        champion = await _champion(intake, request.model)
        done = await _train(bus, intake, parked, champion, None)
        if done is None:
            return
    await _publish(bus, done, parked)
    intake.queue.remove(request.request_id)


async def _climb(bus: Bus, intake: Intake, parked: ParkedRequest,
                 rungs: list[int]) -> ParkedRequest | None:
    """Progressive challengers: train the parked rung once the window since the change
    point holds its size (on the newest that many records), against the champion of the
    moment, and publish it. The ladder ends at a rung that does not beat its baseline by the
    policy's margin (the registry's comparison) once an earlier rung did, at its last rung,
    or when a later rung's data (or the registry's decision on a better previous rung) does
    not come within `window_wait_seconds`; a rung not better before any improvement climbs
    on (a small window may be too noisy to beat the champion, a larger one not).

    Returns the request parked on its next rung, or None when there is nothing more to do
    now. The rung is on disk before it is trained, so a restart resumes there; a rung's run
    is stored before it is published, so a replay re-publishes it, never retrains it.
    """
    trainer, request, rung = intake.trainer, parked.request, parked.rung
    policy = trainer.project.model(request.model).policy
    if rung >= len(rungs):  # the project file now declares fewer rungs than were climbed
        intake.queue.remove(request.request_id)
        return None
    done = trainer.completed(request.request_id, rung)
    if done is None:
        have, needed = await _window_records(intake, request), rungs[rung]
        champion = await _champion(intake, request.model) if have >= needed else None
        previous = trainer.completed(request.request_id, rung - 1) if rung else None
        # The registry has decided on a better previous rung once the champion it was scored
        # against no longer reigns; before that, this rung would be judged against a stale
        # baseline (and rejected for it). A previous rung that was not better changes
        # nothing, so there is nothing to wait for.
        decided = (previous is None or not against_baseline(previous, policy).better
                   or (champion is not None and champion.version != previous.baseline_version))
        if have < needed or not decided:
            if not _waited_out(intake, parked):
                return None
            if rung > 0:
                logger.info("%s: the ladder of %s ends before rung %d of %d: %s after %.0fs",
                            request.model, request.request_id, rung + 1, len(rungs),
                            f"{have} of {needed} records" if have < needed
                            else "no registry decision on the previous rung",
                            intake.settings.window_wait_seconds)
                intake.queue.remove(request.request_id)
                return None
            logger.warning("window of %s has %d of %d records after %.0fs; training its "
                           "first rung on those", request.request_id, have, needed,
                           intake.settings.window_wait_seconds)
            champion = await _champion(intake, request.model)
        done = await _train(bus, intake, parked, champion, rung)
        if done is None:
            return None
    await _publish(bus, done, parked)
    verdict = against_baseline(done, policy)
    # "Until one stops improving": a rung that is not better ends the ladder only after an
    # earlier rung improved; before that, a small window may just be too noisy to beat the
    # champion while a larger one would (on SEA, a rejected first rung ended the ladder).
    improved = any(against_baseline(run, policy).better
                   for run in (trainer.completed(request.request_id, k) for k in range(rung))
                   if run is not None)
    if (not verdict.better and improved) or rung + 1 >= len(rungs):
        logger.info("%s: the ladder of %s ends at rung %d of %d (%d records): %s",
                    request.model, request.request_id, rung + 1, len(rungs),
                    done.lineage.records, verdict.reason)
        intake.queue.remove(request.request_id)
        return None
    logger.info("%s: rung %d of %d of %s climbs on (%s)", request.model, rung + 1, len(rungs),
                request.request_id, verdict.reason)
    climbed = parked.model_copy(update={"rung": rung + 1, "rung_since": utcnow(),
                                        "attempts": 0})
    try:
        intake.queue.put(climbed)
    except OSError as exc:  # still parked on this rung: its run is re-published, not redone
        raise DependencyUnavailable(dependency="training state", detail=str(exc)) from exc
    return climbed


def _waited_out(intake: Intake, parked: ParkedRequest) -> bool:
    return utcnow() >= parked.waiting_since + timedelta(
        seconds=intake.settings.window_wait_seconds)


async def _champion(intake: Intake, model: str) -> ModelVersionView | None:
    """The champion now; an answer that is no version is the registry's fault, not the
    request's: retried like an unreachable registry."""
    try:
        return await fetch_champion(intake.settings.registry_url, model)
    except DependencyUnavailable:
        raise
    except Exception as exc:
        raise DependencyUnavailable(dependency="registry", detail=repr(exc)) from exc


async def _window_records(intake: Intake, request: TrainingRequested) -> int:
    try:
        return await asyncio.to_thread(intake.trainer.window_records, request)
    except OSError as exc:  # a store unreadable: retry, never drop the request
        raise DependencyUnavailable(dependency="stores", detail=str(exc)) from exc


async def _train(bus: Bus, intake: Intake, parked: ParkedRequest,
                 champion: ModelVersionView | None, rung: int | None) -> ModelTrained | None:
    """Train (one rung of) a parked request; None when it failed and that was dealt with
    (refused, or kept parked for another attempt)."""
    request = parked.request
    try:
        return await asyncio.to_thread(intake.trainer.train, request, champion, rung)
    except OSError as exc:  # a store unwritable or full: retry, never drop the request
        raise DependencyUnavailable(dependency="stores", detail=str(exc)) from exc
    except InvalidInput as exc:
        await _refuse(bus, intake, parked, str(exc))
    except DependencyUnavailable:
        raise
    except Exception as exc:  # a bug or an unusable request: a few tries, then refuse
        logger.exception("training %s failed (attempt %d of %d)", request.request_id,
                         parked.attempts + 1, MAX_ATTEMPTS)
        if parked.attempts + 1 >= MAX_ATTEMPTS:
            await _refuse(bus, intake, parked, f"training failed {MAX_ATTEMPTS} times: "
                          f"{exc!r}")
        else:
            intake.queue.put(parked.model_copy(update={"attempts": parked.attempts + 1}))
    return None


async def _publish(bus: Bus, run: ModelTrained, parked: ParkedRequest) -> None:
    await bus.publish(Topic.MODELS_TRAINED, run, key=run.model, ce_id=run.run_id,
                      trace_id=parked.trace_id)


async def _refuse(bus: Bus, intake: Intake, parked: ParkedRequest, reason: str) -> None:
    """Dead-letter a parked request whose offset is long committed, then forget it."""
    value = parked.request.model_dump_json().encode()[:64 * 1024]
    letter = RecordRejected(
        source_topic=parked.topic, partition=parked.partition, offset=parked.offset,
        key=parked.key, value_base64=base64.b64encode(value).decode(),
        value_text=value.decode("utf-8", "replace"), reason=reason[:4000],
        rejected_by=bus.source)
    logger.warning("refused parked request %s: %s", parked.request.request_id, reason)
    await bus.publish_raw(Topic.DATA_REJECTED, letter.model_dump_json().encode(),
                          parked.key.encode() if parked.key else None,
                          build_headers(letter, bus.source, trace_id=parked.trace_id))
    DEAD_LETTERS.labels(Topic.TRAINING_REQUESTS.value).inc()
    REQUESTS.labels("refused").inc()
    intake.queue.remove(parked.request.request_id)


def validated_handler(bus: Bus, trainer: Trainer, intake: Intake) -> BatchHandler:
    """Publish each model's first training request once its dataset has enough records, and
    wake parked requests (their window may be full now)."""

    async def handle(batch: list[Delivery]) -> list[Rejection]:
        highest: dict[str, int] = {}
        for delivery in batch:
            record = cast(RecordValidated, delivery.event)
            highest[record.dataset] = max(highest.get(record.dataset, 0), record.sequence + 1)
        for dataset, seen in highest.items():
            for request in trainer.initial_requests(dataset, seen):
                await bus.publish(Topic.TRAINING_REQUESTS, request, key=request.model,
                                  ce_id=request.request_id)
                trainer.mark_requested(request.model)
                logger.info("requested the first training of %s after %d records",
                            request.model, seen)
        intake.wake.set()
        return []

    return handle
