"""Kafka edge of training: requests in (accepted, refused, or parked), candidates out;
data.validated counts toward the first training of each model and wakes parked requests.

Intake never waits: a request for an undeclared model or over its model's retrain budget
is dead-lettered at once (the budget refusal is also alerted); any other request is
parked on disk before its offset is committed. One worker trains parked requests in
arrival order as soon as their window holds `min_records` (or their wait ran out).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from datetime import timedelta
from typing import cast

from prometheus_client import Counter

from contracts.base import utcnow
from contracts.events import (
    AlertRaised,
    AlertStatus,
    RecordRejected,
    RecordValidated,
    Severity,
    TrainingRequested,
)
from contracts.topics import Topic
from services.training.handlers import Trainer
from services.training.intake import ParkedRequest, RequestQueue, RetrainBudget, park
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
        done = trainer.completed(request.request_id)
        if done is not None:
            logger.info("request %s already trained as %s; re-publishing", request.request_id,
                        done.run_id)
            await bus.publish(Topic.MODELS_TRAINED, done, key=done.model, ce_id=done.run_id)
            return
        if intake.queue.contains(request.request_id):
            return  # accepted before (a replay): the worker has it
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
                await bus.publish(Topic.ALERTS, _refusal_alert(request, str(refused), used,
                                                                limit),
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
        logger.info("accepted %s for %s (%s); parked until its window holds %d records",
                    request.request_id, request.model, request.reason.value,
                    request.window.min_records)
        intake.wake.set()

    return per_event(handle)


def _refusal_alert(request: TrainingRequested, summary: str, used: int,
                   limit: int) -> AlertRaised:
    # One alert id per refused request: a replay after a crash raises the same alert again.
    return AlertRaised(
        alert_id=f"al-{hashlib.sha256(request.request_id.encode()).hexdigest()[:12]}",
        status=AlertStatus.FIRING,
        severity=Severity.WARNING, kind="training_refused", model=request.model,
        summary=summary[:500],
        evidence={"request_id": request.request_id[:200], "reason": request.reason.value,
                  "requested_by": request.requested_by[:200], "used": used, "limit": limit},
        runbook=("Training requests for this model arrive faster than its retrain budget. "
                 "Check who writes training.requests (data.rejected holds the refused "
                 "requests); raise policy.max_retrains_per_hour only if this is expected."))


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
    candidate is published or it is refused (dead-lettered)."""
    trainer, request = intake.trainer, parked.request
    trace_id_var.set(parked.trace_id)
    done = trainer.completed(request.request_id)
    if done is None:
        waited_out = utcnow() >= parked.parked_at + timedelta(
            seconds=intake.settings.window_wait_seconds)
        try:
            have = await asyncio.to_thread(trainer.window_records, request)
            if have < request.window.min_records and not waited_out:
                return
            if have < request.window.min_records:
                logger.warning("window of %s has %d of %d records after %.0fs; training on "
                               "those", request.request_id, have, request.window.min_records,
                               intake.settings.window_wait_seconds)
            champion = await fetch_champion(intake.settings.registry_url, request.model)
            done = await asyncio.to_thread(trainer.train, request, champion)
        except OSError as exc:  # a store unwritable or full: retry, never drop the request
            raise DependencyUnavailable(dependency="stores", detail=str(exc)) from exc
        except InvalidInput as exc:
            await _refuse(bus, intake, parked, str(exc))
            return
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
            return
    await bus.publish(Topic.MODELS_TRAINED, done, key=done.model, ce_id=done.run_id,
                      trace_id=parked.trace_id)
    intake.queue.remove(request.request_id)


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
