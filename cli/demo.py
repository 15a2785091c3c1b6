"""The demo: the loop closing on River's Agrawal stream with an abrupt concept drift.

A producer publishes labeled loan applications; v1 trains and is promoted;
an application asks serving for predictions and later publishes the true
labels; the world changes (Agrawal switches classification function); the
error rises, monitoring alerts and requests a retrain on post-drift data; v2
is trained, beats v1 on the same holdout, is promoted, and serving answers
with v2. The story is printed as a timeline.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from river.datasets import synth

from cli.kafka_io import follower, producer, send_all
from contracts.events import (
    AlertRaised,
    AlertStatus,
    LabeledRecord,
    LifecycleAction,
    ModelLifecycleChanged,
)
from contracts.topics import Topic

Say = Callable[[str], None]


@dataclass
class StoryConfig:
    """Sizes of each act; the defaults finish in well under 3 minutes on 2 cores."""

    model: str = "loans-tree"
    dataset: str = "loans"
    initial_records: int = 2000
    before_drift: int = 1000
    after_v2: int = 1000
    max_drifted: int = 20_000
    chunk: int = 50
    pause: float = 0.02
    before_function: int = 0
    after_function: int = 2
    seed: int = 7
    timeout: float = 150.0


@dataclass
class Accuracy:
    correct: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.correct += int(ok)
        self.total += 1

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")


@dataclass
class StoryResult:
    """What happened, and whether the loop closed."""

    before: Accuracy = field(default_factory=Accuracy)
    drifted_v1: Accuracy = field(default_factory=Accuracy)
    after_v2: Accuracy = field(default_factory=Accuracy)
    alerts: list[AlertRaised] = field(default_factory=list)
    lifecycle: list[ModelLifecycleChanged] = field(default_factory=list)
    served_versions: set[int] = field(default_factory=set)
    new_version: int | None = None
    failure: str | None = None

    @property
    def alert_fired(self) -> bool:
        return any(a.status is AlertStatus.FIRING and a.kind == "concept_drift"
                   for a in self.alerts)

    @property
    def promoted_versions(self) -> list[int]:
        return [e.version for e in self.lifecycle if e.action is LifecycleAction.PROMOTED]

    def why_not_closed(self) -> str | None:
        """None when the loop closed; otherwise the first thing that did not happen."""
        if self.failure:
            return self.failure
        if not self.alert_fired:
            return "no concept-drift alert was published"
        if not any(v >= 2 for v in self.promoted_versions):
            return "no retrained version was promoted"
        if self.new_version is None:
            return "serving never answered with the retrained version"
        if not self.after_v2.value > self.drifted_v1.value:
            return (f"the retrained version is not better after the drift "
                    f"({self.after_v2.value:.3f} vs {self.drifted_v1.value:.3f})")
        return None


def _stream(function: int, seed: int) -> Iterator[tuple[dict[str, Any], int]]:
    return iter(synth.Agrawal(classification_function=function, seed=seed))


class Story:
    """Plays the demo against a running platform."""

    def __init__(self, bootstrap: str, serving_url: str, config: StoryConfig, say: Say,
                 topic_prefix: str = "") -> None:
        self.bootstrap = bootstrap
        self.serving_url = serving_url.rstrip("/")
        self.config = config
        self.say = say
        self.prefix = topic_prefix
        self.result = StoryResult()
        self._t0 = time.monotonic()
        self._counter = itertools.count()

    def _tell(self, text: str) -> None:
        self.say(f"[+{time.monotonic() - self._t0:6.1f}s] {text}")

    async def play(self) -> StoryResult:
        listener = asyncio.create_task(self._listen())
        try:
            await asyncio.wait_for(self._acts(), self.config.timeout)
        except TimeoutError:
            self.result.failure = f"the story did not finish within {self.config.timeout:.0f}s"
        except Exception as exc:  # reported as the reason the loop did not close
            self.result.failure = f"{type(exc).__name__}: {exc}"
        finally:
            await asyncio.sleep(0.5)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        return self.result

    async def _listen(self) -> None:
        async with follower(self.bootstrap, [Topic.ALERTS, Topic.MODELS_LIFECYCLE],
                            self.prefix) as consumer:
            async for message in consumer:
                if message.topic == Topic.ALERTS.qualified(self.prefix):
                    alert = AlertRaised.model_validate_json(message.value)
                    self.result.alerts.append(alert)
                    self._tell(f"ALERT {alert.status.value} [{alert.severity.value}] "
                               f"{alert.kind}: {alert.summary}")
                else:
                    event = ModelLifecycleChanged.model_validate_json(message.value)
                    self.result.lifecycle.append(event)
                    metric = ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items()
                                       if k != "holdout_size")
                    self._tell(f"registry: {event.model} v{event.version} {event.action.value} "
                               f"({metric}) — {event.reason}")

    async def _acts(self) -> None:
        cfg = self.config
        async with producer(self.bootstrap) as kafka, httpx.AsyncClient(timeout=10.0) as http:
            self._tell(f"act 1: a producer publishes {cfg.initial_records} labeled loan "
                       f"applications (Agrawal function {cfg.before_function})")
            history = _stream(cfg.before_function, cfg.seed)
            records = [self._record(x, y, None) for x, y in
                       itertools.islice(history, cfg.initial_records)]
            await send_all(kafka, Topic.DATA_LABELED.qualified(self.prefix),
                           [(r.message_key, r) for r in records], "demo-producer")
            self._tell("waiting for training, the registry and serving to bring up v1")
            version = await self._wait_for_serving(http)
            self._tell(f"serving answers with v{version}")

            self._tell(f"act 2: {cfg.before_drift} live requests; their labels arrive later")
            live = _stream(cfg.before_function, cfg.seed + 1)
            await self._serve(http, kafka, live, self.result.before, cfg.before_drift, version)
            self._tell(f"accuracy before the drift: {self.result.before.value:.3f}")

            self._tell(f"act 3: the world changes — the label now follows Agrawal function "
                       f"{cfg.after_function}")
            drifted = _stream(cfg.after_function, cfg.seed + 2)
            served = 0
            while self.result.new_version is None:
                if served >= cfg.max_drifted:
                    raise RuntimeError(f"no new version served after {served} drifted requests")
                served += await self._serve(http, kafka, drifted, self.result.drifted_v1,
                                            cfg.chunk, version, stop_on_change=True)
            self._tell(f"serving switched to v{self.result.new_version} after {served} drifted "
                       f"requests; v{version}'s accuracy on them: "
                       f"{self.result.drifted_v1.value:.3f}")

            self._tell(f"act 4: {cfg.after_v2} more drifted requests, answered by "
                       f"v{self.result.new_version}")
            await self._serve(http, kafka, drifted, self.result.after_v2, cfg.after_v2,
                              self.result.new_version)
            self._tell(f"accuracy after the retrain: {self.result.after_v2.value:.3f}")
            await self._wait_for_resolution()

    async def _wait_for_serving(self, http: httpx.AsyncClient) -> int:
        probe = {"features": next(_stream(self.config.before_function, 0))[0]}
        while True:
            response = await http.post(f"{self.serving_url}/v1/models/{self.config.model}/predict",
                                       json=probe)
            if response.status_code == 200:
                return int(response.json()["version"])
            if response.status_code != 409:
                raise RuntimeError(f"serving answered {response.status_code}: {response.text}")
            await asyncio.sleep(0.5)

    async def _wait_for_resolution(self, limit: float = 15.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if any(a.status is AlertStatus.RESOLVED for a in self.result.alerts):
                return
            await asyncio.sleep(0.5)

    def _record(self, x: dict[str, Any], y: int, prediction_id: str | None) -> LabeledRecord:
        return LabeledRecord(dataset=self.config.dataset, record_id=f"r{next(self._counter)}",
                             features=x, label=int(y), prediction_id=prediction_id)

    async def _serve(self, http: httpx.AsyncClient, kafka: Any, stream: Iterator[Any],
                     accuracy: Accuracy, count: int, version: int,
                     stop_on_change: bool = False) -> int:
        """Ask for predictions in chunks, then publish their true labels; answers of
        `version` count toward `accuracy`. With stop_on_change, stop at another version."""
        served = 0
        while served < count:
            rows = list(itertools.islice(stream, min(self.config.chunk, count - served)))
            response = await http.post(
                f"{self.serving_url}/v1/models/{self.config.model}/predict",
                content=orjson.dumps({"instances": [x for x, _ in rows]}),
                headers={"content-type": "application/json"})
            response.raise_for_status()
            body = response.json()
            answered_by = int(body["version"])
            self.result.served_versions.add(answered_by)
            if answered_by == version:
                for (_, y), item in zip(rows, body["predictions"], strict=True):
                    accuracy.add(item["prediction"] == y)
            labels = [self._record(x, y, item["prediction_id"])
                      for (x, y), item in zip(rows, body["predictions"], strict=True)]
            await send_all(kafka, Topic.DATA_LABELED.qualified(self.prefix),
                           [(r.message_key, r) for r in labels], "demo-app")
            served += len(rows)
            if stop_on_change and answered_by != version:
                self.result.new_version = answered_by
                break
            await asyncio.sleep(self.config.pause)
        return served


def summary(result: StoryResult) -> list[str]:
    """The closing lines of the demo."""
    return [
        f"accuracy before drift (v1):        {result.before.value:.3f} "
        f"on {result.before.total} requests",
        f"accuracy after drift, v1 serving:  {result.drifted_v1.value:.3f} "
        f"on {result.drifted_v1.total} requests",
        f"accuracy after drift, v2 serving:  {result.after_v2.value:.3f} "
        f"on {result.after_v2.total} requests",
        f"alerts: {', '.join(f'{a.kind}/{a.status.value}' for a in result.alerts) or 'none'}",
        f"promoted versions: {result.promoted_versions}",
    ]
