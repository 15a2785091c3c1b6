"""An online learner through the real services on the embedded broker: labeled records in,
a signed snapshot out, promoted by the registry's unchanged gate and served; after the
concept flips, the next snapshot beats the frozen champion on the records it never learned."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from river.datasets import synth

from cli.kafka_io import producer, send_all
from cli.platform import Platform
from contracts.events import LabeledRecord
from contracts.topics import Topic
from tests.integration.conftest import running_platform

MODEL = "sea-online"
PROJECT = f"""
name = "online-test"

[datasets.sea.label]
type = "int"
categories = [0, 1]

[datasets.sea.features]
x0 = {{ type = "float", min = 0, max = 10 }}
x1 = {{ type = "float", min = 0, max = 10 }}
x2 = {{ type = "float", min = 0, max = 10 }}

[models.{MODEL}]
dataset = "sea"
pipeline = [{{ estimator = "forest.ARFClassifier", params = {{ n_models = 3 }} }}]

[models.{MODEL}.training]
seed = 7

[models.{MODEL}.policy]
metric = "accuracy"
promotion_margin = 0.01
initial_training_records = 100000  # no batch training here: the online learner alone
retrain_on_drift = false

[models.{MODEL}.online]
warm_up_records = 100
snapshot_every_records = 200
prequential_window = 100
early_snapshot_records = 0  # this module follows the cadence's series: v2, then v3 after a kill
offer_when_better = false
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("online")
    config = root / "driftloop.toml"
    config.write_text(PROJECT, encoding="utf-8")
    with running_platform(config, root / "data") as running:
        yield running


def sea(start: int, stop: int, flipped: bool = False) -> list[tuple[str, LabeledRecord]]:
    """SEA records `start`..`stop`; `flipped` inverts the concept (a sudden drift)."""
    stream = itertools.islice(synth.SEA(variant=0, seed=1), start, stop)
    return [(f"r{i}", LabeledRecord(dataset="sea", record_id=f"r{i}",
                                    features={f"x{k}": float(v) for k, v in x.items()},
                                    label=int(y) ^ int(flipped)))
            for i, (x, y) in enumerate(stream, start)]


def publish(platform: Platform, records: list[tuple[str, LabeledRecord]]) -> None:
    async def send() -> None:
        async with producer(platform.bootstrap or "") as kafka:
            await send_all(kafka, Topic.DATA_LABELED.value, records)

    asyncio.run(send())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 40) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


def test_online_snapshots_are_gated_promoted_and_served(platform: Platform) -> None:
    registry = httpx.Client(base_url=platform.url("registry"), timeout=5)
    serving = httpx.Client(base_url=platform.url("serving"), timeout=5)

    def versions() -> list[dict[str, Any]]:
        answer = registry.get(f"/v1/models/{MODEL}/versions")
        return list(answer.json()) if answer.status_code == 200 else []

    def served(version: int) -> bool:
        return any(m["model"] == MODEL and m["version"] == version
                   for m in serving.get("/v1/models").json())

    with registry, serving:
        publish(platform, sea(0, 300))
        first = wait_for("the first snapshot promoted", lambda: [
            v for v in versions() if v["stage"] == "champion"])[0]
        assert first["version"] == 1
        assert first["request_id"] == f"online-{MODEL}-1"
        assert first["lineage"]["hyperparameters"]["mode"] == "online"
        assert first["lineage"]["records"] >= 200
        wait_for("serving v1", lambda: served(1))
        answer = serving.post(f"/v1/models/{MODEL}/predict",
                              json={"features": {"x0": 1.0, "x1": 2.0, "x2": 3.0}})
        assert answer.status_code == 200 and answer.json()["version"] == 1

        publish(platform, sea(300, 800, flipped=True))
        champion = wait_for("a snapshot promoted over v1", lambda: [
            v for v in versions() if v["version"] > 1 and v["stage"] == "champion"])[0]
        # gated against v1 on the same records, all learned after v1's snapshot
        assert champion["baseline_version"] == 1
        assert champion["metrics"]["accuracy"] > champion["baseline_metrics"]["accuracy"]
        assert champion["lineage"]["records"] >= 500
        wait_for("serving the new champion", lambda: served(champion["version"]))
        audit = registry.get(f"/v1/models/{MODEL}/audit").json()
        assert (champion["version"], "promoted") in [(e["version"], e["action"]) for e in audit]


def test_a_killed_learner_resumes_from_its_last_snapshot(platform: Platform) -> None:
    """After SIGKILL, training's learner loads its last snapshot and goes on: the next snapshot
    is the next in the series, over every record logged, and the gate still applies."""
    platform.kill("training")
    publish(platform, sea(800, 950, flipped=True))  # arrives while training is down
    platform.restart("training")
    publish(platform, sea(950, 1100, flipped=True))
    with httpx.Client(base_url=platform.url("registry"), timeout=5) as registry:
        third = wait_for("the snapshot after the restart", lambda: [
            v for v in registry.get(f"/v1/models/{MODEL}/versions").json()
            if v["version"] == 3 and v["stage"] != "candidate"])[0]
    assert third["request_id"] == f"online-{MODEL}-3"
    assert third["lineage"]["records"] >= 1000  # 800 before the kill, the rest after
    assert third["baseline_version"] == 2
    assert third["lineage"]["hyperparameters"]["compared_records"] == 100
