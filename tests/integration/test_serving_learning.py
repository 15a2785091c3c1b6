"""Serving that goes on learning, through the real services on the embedded broker: v1 is
trained on the first records; the concept then flips and no new version is made, yet the
served v1 comes to answer the new concept, because serving learns every stored label; each
prediction event says how far the answering model had learned."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from river.datasets import synth

from cli.kafka_io import follower, producer, send_all
from cli.platform import Platform
from contracts.events import LabeledRecord
from contracts.topics import Topic
from tests.integration.conftest import running_platform

MODEL = "sea-served"
PROJECT = f"""
name = "serving-learning-test"

[datasets.sea.label]
type = "int"
categories = [0, 1]

[datasets.sea.features]
x0 = {{ type = "float", min = 0, max = 10 }}
x1 = {{ type = "float", min = 0, max = 10 }}
x2 = {{ type = "float", min = 0, max = 10 }}

[models.{MODEL}]
dataset = "sea"
pipeline = [{{ estimator = "preprocessing.StandardScaler" }},
            {{ estimator = "linear_model.LogisticRegression" }}]

[models.{MODEL}.policy]
metric = "accuracy"
initial_training_records = 200
retrain_on_drift = false  # no new version: only serving's learning can adapt

[models.{MODEL}.serving]
learn = true
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("serving-learning")
    config = root / "driftloop.toml"
    config.write_text(PROJECT, encoding="utf-8")
    with running_platform(config, root / "data") as running:
        yield running


def sea(start: int, stop: int, flipped: bool = False) -> list[tuple[dict[str, float], int]]:
    stream = itertools.islice(synth.SEA(variant=0, seed=3), start, stop)
    return [({f"x{k}": float(v) for k, v in x.items()}, int(y) ^ int(flipped))
            for x, y in stream]


def publish(platform: Platform, rows: list[tuple[dict[str, float], int]], first: int) -> None:
    records = [(f"r{i}", LabeledRecord(dataset="sea", record_id=f"r{i}", features=x, label=y))
               for i, (x, y) in enumerate(rows, first)]

    async def send() -> None:
        async with producer(platform.bootstrap or "") as kafka:
            await send_all(kafka, Topic.DATA_LABELED.value, records)

    asyncio.run(send())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return found


def prediction_events(platform: Platform) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with follower(platform.bootstrap or "", [Topic.PREDICTIONS]) as consumer:
            batches = await consumer.getmany(timeout_ms=3000)
            return [orjson.loads(m.value) for ms in batches.values() for m in ms]

    return asyncio.run(read())


def test_the_served_version_adapts_to_new_labels_without_a_new_version(
        platform: Platform) -> None:
    serving = httpx.Client(base_url=platform.url("serving"), timeout=10)
    registry = httpx.Client(base_url=platform.url("registry"), timeout=10)
    probes = sea(5000, 5200, flipped=True)

    def served() -> int | None:
        for model in serving.get("/v1/models").json():
            if model["model"] == MODEL:
                return int(model["version"])
        return None

    def accuracy_on_the_new_concept() -> tuple[float, set[int]]:
        answers = serving.post(f"/v1/models/{MODEL}/predict",
                               json={"instances": [x for x, _ in probes]}).json()
        right = sum(a["prediction"] == y for a, (_, y) in zip(answers["predictions"], probes,
                                                                strict=True))
        return right / len(probes), {answers["version"]}

    def learned() -> float:
        text = serving.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("driftloop_serving_learned_records_total{")
                   and MODEL in line)

    with serving, registry:
        publish(platform, sea(0, 200), 0)
        wait_for("serving v1", lambda: served() == 1)
        before, _ = accuracy_on_the_new_concept()
        assert before < 0.35, f"v1 already answers the flipped concept ({before:.2f})"

        publish(platform, sea(200, 1200, flipped=True), 200)
        wait_for("serving to learn the flipped records", lambda: learned() >= 1000)
        after, versions = accuracy_on_the_new_concept()

        assert versions == {1}  # no new version was made: v1 learned in serving
        assert [v["version"] for v in registry.get(f"/v1/models/{MODEL}/versions").json()] == [1]
        assert after > 0.75, f"the served v1 did not adapt ({before:.2f} -> {after:.2f})"
        marks = [e.get("learned_through") for e in prediction_events(platform)
                 if e["model"] == MODEL]
        assert marks and all(isinstance(m, int) for m in marks)
        assert min(marks) >= 200 and max(marks) == 1200  # first ask: v1's data; last: all
