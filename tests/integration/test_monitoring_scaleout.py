"""Issue 7, point 5: two monitoring workers in one group split the work as Kafka splits
partitions, and together decide what one would. Two models live on different partitions;
predictions are made while one worker runs, a second worker joins (a rebalance moves state
from the first to it), then the labels come: every pending prediction still joins, each
model is scored by exactly one worker, and the drift of one model raises one alert."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from river.datasets import synth

from cli.platform import Platform
from contracts.events import AlertRaised, LabeledRecord
from contracts.topics import Topic
from shared.broker import free_port
from shared.datasets import DatasetStore
from shared.partitioning import key_index
from shared.processes import terminate
from tests.fault.trust_helpers import events, wait_for
from tests.integration.conftest import PROJECT_FILE, ROOT, running_platform
from tests.integration.test_online_loop import publish

TREE, LOGISTIC = "loans-tree", "loans-logistic"
SECOND_MODEL = """
[models.loans-logistic]
dataset = "loans"
task = "classification"
pipeline = [
  { estimator = "preprocessing.StandardScaler" },
  { estimator = "linear_model.LogisticRegression" },
]

[models.loans-logistic.policy]
retrain_on_drift = false
"""
COUNT = 300


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("scaleout")
    config = root / "driftloop.toml"
    demo = PROJECT_FILE.read_text(encoding="utf-8")
    assert "retrain_on_drift = true" in demo
    # no retrains: each model's version stays, and with it the count of its labeled outcomes
    config.write_text(demo.replace("retrain_on_drift = true", "retrain_on_drift = false")
                      + SECOND_MODEL, encoding="utf-8")
    with running_platform(config, root / "data") as running:
        yield running


def status(url: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(f"{url}/v1/status", timeout=5)
    except httpx.HTTPError:
        return None
    return dict(answer.json()) if answer.status_code == 200 else None


def predict(platform: Platform, model: str, seed: int) -> dict[str, int]:
    """COUNT predictions of `model`; their ids with Agrawal's label for the first half and
    its opposite for the second (a drift no model trained before it survives)."""
    outcomes = {}
    with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving:
        for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=seed), COUNT)):
            answer = serving.post(f"/v1/models/{model}/predict", json={"features": x})
            assert answer.status_code == 200, answer.text
            outcomes[answer.json()["prediction_id"]] = int(y) if i < COUNT // 2 else 1 - int(y)
    return outcomes


def test_two_workers_split_the_models_and_decide_as_one(platform: Platform) -> None:
    assert key_index(TREE, 3) != key_index(LOGISTIC, 3)  # the two models' partitions
    first_url = platform.url("monitoring")
    rows = list(synth.Agrawal(seed=5).take(2_000))
    publish(platform, [(f"init-{i}", LabeledRecord(dataset="loans", record_id=f"init-{i}",
                                                   features=x, label=int(y)))
                       for i, (x, y) in enumerate(rows)])
    with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving:
        wait_for(lambda: {m["model"] for m in serving.get("/v1/models").json()}
                 == {TREE, LOGISTIC}, "both models to serve", 180)
    wait_for(lambda: (s := status(first_url)) and s["partitions"] == [0, 1, 2],
             "the first worker to own every partition")

    outcomes = {TREE: predict(platform, TREE, 11), LOGISTIC: predict(platform, LOGISTIC, 12)}
    wait_for(lambda: (s := status(first_url)) and s["pending_joins"] >= 2 * COUNT,
             "the first worker to hold every prediction")

    port = free_port()
    env = {**platform.child_env("monitoring"), "DRIFTLOOP_MONITORING_PORT": str(port)}
    log = (platform.data_dir / "logs" / "monitoring-2.log").open("wb")
    second = subprocess.Popen([sys.executable, "-m", "services.monitoring"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              start_new_session=True)
    second_url = f"http://127.0.0.1:{port}"
    try:
        def split() -> bool:
            one, two = status(first_url), status(second_url)
            return bool(one and two and one["partitions"] and two["partitions"]
                        and sorted(one["partitions"] + two["partitions"]) == [0, 1, 2])

        wait_for(split, "the two workers to split the partitions", 120)
        def scored(least: int) -> dict[str, list[int]] | None:
            workers = [status(first_url), status(second_url)]
            if not all(workers):
                return None
            counts = {m: [int(w[m]["labeled"]) for w in workers if w]  # type: ignore[index]
                      for m in (TREE, LOGISTIC)}
            return counts if all(sum(c) >= least for c in counts.values()) else None

        for half in (slice(0, COUNT // 2), slice(COUNT // 2, COUNT)):  # right, then wrong
            feedback = [{"prediction_id": p, "label": y} for model in (TREE, LOGISTIC)
                        for p, y in list(outcomes[model].items())[half]]
            with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving:
                assert serving.post("/v1/feedback", json=feedback).status_code == 202
            counts = wait_for(lambda h=half: scored(h.stop),  # type: ignore[misc]
                              "every label to be joined by one worker or the other", 120)
        for model, per_worker in counts.items():
            assert sorted(per_worker) == [0, COUNT], (model, per_worker)  # one owner, once
        one, two = status(first_url), status(second_url)
        assert one and two
        assert sorted(one["models_owned"] + two["models_owned"]) == sorted([TREE, LOGISTIC])

        def fired() -> list[AlertRaised]:
            return [a for a in events(platform.bootstrap or "", Topic.ALERTS, AlertRaised)
                    if a.kind == "concept_drift" and a.status.value == "firing"]

        alerts = wait_for(lambda: {a.model for a in fired()} == {TREE, LOGISTIC} and fired(),
                          "each model's drift to raise its alert", 60)
        distinct = {(a.model, a.alert_id) for a in alerts}
        assert sorted(m for m, _ in distinct) == sorted([TREE, LOGISTIC])  # one each

        store = DatasetStore(platform.data_dir / "datasets")
        wanted = {f"feedback-{p}" for model in outcomes for p in outcomes[model]}
        stored = wait_for(lambda: len(got := [r.record_id for r in store.records("loans")
                                              if r.record_id in wanted]) >= len(wanted) and got,
                          "every completed record in the dataset", 60)
        assert sorted(stored) == sorted(wanted)  # each once
    finally:
        terminate(second, 30)
        log.close()
    assert second.returncode is not None

