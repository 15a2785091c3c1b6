"""Drives one stream through a running platform, as an outside application would.

1. A producer publishes the first `initial` samples as labeled records on data.labeled
   (event_time spaced 1/rate apart, ending now; record ids `s<index>`).
2. Once the registry has a champion and serving has loaded it, each remaining sample is
   scheduled at start + k/rate and POSTed to predict by one of `workers` concurrent
   keep-alive connections (a single-instance request); the answer's prediction, version and
   prediction_id are recorded with the client's send and answer times.
3. The label of sample k is published (features, label, prediction_id, event_time = when it
   was asked) once sample k + label_delay has been answered: labels arrive a fixed number of
   samples late, in order.
4. Meanwhile a follower outside any consumer group reads alerts, models.lifecycle,
   models.trained, training.requests and data.rejected from the beginning, noting when the
   client saw each event.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from bench.common import wait_champion
from bench.loop.streams import Stream
from cli.kafka_io import follower, producer, send_all
from cli.platform import Platform
from contracts.events import (
    AlertRaised,
    LabeledRecord,
    ModelLifecycleChanged,
    ModelTrained,
    TrainingRequested,
)
from contracts.topics import Topic

JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Plan:
    """How one run drives the platform."""

    model: str
    dataset: str
    initial: int
    rate: float
    label_delay: int = 10
    workers: int = 8
    grace: float = 3.0
    """Seconds to keep following events after the last label."""


@dataclass
class Trace:
    """What the client saw, per served sample (index k = sample initial + k)."""

    first: int
    predicted: list[Any]
    versions: list[int]
    prediction_ids: list[str]
    sent_at: list[float]
    answered_at: list[float]
    retried: int = 0
    """Requests answered 503 (outbox full), or whose connection failed, and sent again."""
    behind: float = 0.0
    """Longest delay of a request behind its scheduled time, in seconds."""
    client_cpu: float = 0.0
    """CPU seconds of this process while serving (HTTP client, labels, event follower, the
    platform's log pumps): what the harness takes from the machine it measures."""


@dataclass
class Events:
    """Control events the follower read, with the wall-clock time the client saw each."""

    alerts: list[AlertRaised] = field(default_factory=list)
    lifecycle: list[ModelLifecycleChanged] = field(default_factory=list)
    trained: list[ModelTrained] = field(default_factory=list)
    requests: list[TrainingRequested] = field(default_factory=list)
    rejected: int = 0
    seen_at: dict[str, float] = field(default_factory=dict)
    """Event id (alert id + status, run id, request id) to when the client read it."""


async def drive(platform: Platform, stream: Stream, plan: Plan,
                say: Any = print) -> tuple[Trace, Events, int]:
    """Run the whole stream; returns the trace, the events and the registry's version count."""
    bootstrap = str(platform.bootstrap)
    events = Events()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(bootstrap, events, stop))
    try:
        async with producer(bootstrap) as kafka:
            await _publish_initial(kafka, stream, plan)
            await asyncio.to_thread(wait_champion, platform, plan.model)
            limits = httpx.Limits(max_connections=plan.workers,
                                  max_keepalive_connections=plan.workers)
            async with httpx.AsyncClient(base_url=platform.url("serving"), timeout=30,
                                         limits=limits) as http:
                await _wait_loaded(http, plan.model)
                trace = await _serve(http, kafka, stream, plan, say)
        await asyncio.sleep(plan.grace)
    finally:
        stop.set()
        await watcher
    async with httpx.AsyncClient(base_url=platform.url("registry"), timeout=10) as registry:
        versions = len((await registry.get(f"/v1/models/{plan.model}/versions")).json())
    return trace, events, versions


def _record(plan: Plan, index: int, sample: tuple[Any, Any], at: float,
            prediction_id: str | None = None) -> tuple[str, LabeledRecord]:
    x, y = sample
    record = LabeledRecord(dataset=plan.dataset, record_id=f"s{index}", features=x, label=y,
                           event_time=datetime.fromtimestamp(at, UTC),
                           prediction_id=prediction_id)
    return record.record_id, record


async def _publish_initial(kafka: AIOKafkaProducer, stream: Stream, plan: Plan) -> None:
    now = time.time()
    records = [_record(plan, i, stream.samples[i], now - (plan.initial - i) / plan.rate)
               for i in range(plan.initial)]
    await send_all(kafka, Topic.DATA_LABELED.value, records, "bench-loop")


async def _wait_loaded(http: httpx.AsyncClient, model: str, timeout: float = 120) -> None:
    """Serving has loaded a version of `model` (the registry's champion may be ahead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(m["model"] == model for m in (await http.get("/v1/models")).json()):
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.3)
    raise TimeoutError(f"serving did not load {model} in {timeout:.0f} s")


async def _serve(http: httpx.AsyncClient, kafka: AIOKafkaProducer, stream: Stream, plan: Plan,
                 say: Any) -> Trace:
    first, count = plan.initial, len(stream.samples) - plan.initial
    trace = Trace(first, [None] * count, [0] * count, [""] * count, [0.0] * count, [0.0] * count)
    answered = [False] * count
    progress = asyncio.Event()  # set on every answer: the label loop waits for it, not a timer
    queue = iter(range(count))  # shared by the workers: each sample goes to one of them
    start = time.monotonic() + 0.2
    path = f"/v1/models/{plan.model}/predict"

    async def worker() -> None:
        for k in queue:
            delay = start + k / plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                trace.behind = max(trace.behind, -delay)
            body = orjson.dumps({"features": stream.samples[first + k][0]})
            trace.sent_at[k] = time.time()
            response = await _predict(http, path, body, trace)
            if response.status_code != 200:
                raise RuntimeError(f"predict answered {response.status_code}: {response.text}")
            trace.answered_at[k] = time.time()
            answer = orjson.loads(response.content)
            trace.predicted[k] = answer["prediction"]
            trace.versions[k] = int(answer["version"])
            trace.prediction_ids[k] = answer["prediction_id"]
            answered[k] = True
            progress.set()

    async def labels() -> None:
        sent = done = 0
        last_said = time.monotonic()
        while sent < count:
            while done < count and answered[done]:
                done += 1
            limit = done - plan.label_delay if done < count else count
            if limit > sent:
                batch = [_record(plan, first + k, stream.samples[first + k], trace.sent_at[k],
                                 trace.prediction_ids[k]) for k in range(sent, limit)]
                await send_all(kafka, Topic.DATA_LABELED.value, batch, "bench-loop")
                sent = limit
            else:
                progress.clear()
                await progress.wait()
            if time.monotonic() - last_said > 15:
                last_said = time.monotonic()
                say(f"  {done:,}/{count:,} served ({done / (last_said - start):,.0f}/s), "
                    f"serving v{trace.versions[max(done - 1, 0)]}")

    cpu = time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(plan.workers):
            group.create_task(worker())
        group.create_task(labels())
    trace.client_cpu = time.process_time() - cpu
    return trace


async def _predict(http: httpx.AsyncClient, path: str, body: bytes,
                   trace: Trace) -> httpx.Response:
    """One prediction as a client in production asks for it: a 503 (outbox full) or a failed
    connection (a keep-alive connection the server closed, a timeout of an overloaded machine)
    is asked again, counted; a fifth failed connection in a row ends the run."""
    failures = 0
    while True:
        try:
            response = await http.post(path, content=body, headers=JSON)
        except httpx.TransportError:
            failures += 1
            if failures >= 5:
                raise
            trace.retried += 1
            await asyncio.sleep(0.05 * failures)
            continue
        if response.status_code != 503:
            return response
        trace.retried += 1
        await asyncio.sleep(0.05)


async def _watch(bootstrap: str, events: Events, stop: asyncio.Event) -> None:
    topics = [Topic.ALERTS, Topic.MODELS_LIFECYCLE, Topic.MODELS_TRAINED,
              Topic.TRAINING_REQUESTS, Topic.DATA_REJECTED]
    async with follower(bootstrap, topics) as consumer:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            seen = time.time()
            for messages in batches.values():
                for message in messages:
                    _note(events, Topic(message.topic), message.value, seen)


def _note(events: Events, topic: Topic, value: bytes, seen: float) -> None:
    if topic is Topic.ALERTS:
        alert = AlertRaised.model_validate_json(value)
        events.alerts.append(alert)
        events.seen_at[f"{alert.alert_id}:{alert.status.value}"] = seen
    elif topic is Topic.MODELS_LIFECYCLE:
        events.lifecycle.append(ModelLifecycleChanged.model_validate_json(value))
    elif topic is Topic.MODELS_TRAINED:
        run = ModelTrained.model_validate_json(value)
        events.trained.append(run)
        events.seen_at[run.run_id] = seen
    elif topic is Topic.TRAINING_REQUESTS:
        request = TrainingRequested.model_validate_json(value)
        events.requests.append(request)
        events.seen_at[request.request_id] = seen
    else:
        events.rejected += 1
