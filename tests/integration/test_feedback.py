"""Feedback by prediction id through the real services: label-only feedback over HTTP and
over Kafka reaches monitoring's detectors and, completed by its prediction, the dataset
store; feedback whose prediction never comes is dead-lettered with the reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from river.datasets import synth

from cli.platform import Platform
from contracts.events import LabeledRecord, RecordRejected
from contracts.topics import Topic
from shared.datasets import DatasetStore
from tests.fault.trust_helpers import events, wait_for
from tests.integration.conftest import PROJECT_FILE, running_platform
from tests.integration.test_online_loop import publish as publish_keyed

MODEL = "loans-tree"
TTL = 4.0


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The demo project with a label TTL of a few seconds, so an orphan expires in the test."""
    root = tmp_path_factory.mktemp("feedback")
    config = root / "driftloop.toml"
    config.write_text(PROJECT_FILE.read_text(encoding="utf-8").replace(
        "label_ttl_seconds = 3600", f"label_ttl_seconds = {TTL:g}"), encoding="utf-8")
    with running_platform(config, root / "data") as running:
        yield running


def publish(platform: Platform, records: list[LabeledRecord]) -> None:
    """Each record under its own key (the prediction id of feedback alone)."""
    publish_keyed(platform, [(r.message_key, r) for r in records])


def test_feedback_by_prediction_id_reaches_the_detectors_and_the_dataset(
        platform: Platform) -> None:
    rows = list(synth.Agrawal(seed=3).take(2_100))
    publish(platform, [LabeledRecord(dataset="loans", record_id=f"init-{i}", features=x,
                                     label=int(y)) for i, (x, y) in enumerate(rows[:2_000])])
    served = rows[2_000:2_040]
    with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving, \
            httpx.Client(base_url=platform.url("monitoring"), timeout=10) as monitoring:
        wait_for(lambda: serving.get("/v1/models").json(), "v1 to serve", 120)
        answers = [serving.post(f"/v1/models/{MODEL}/predict", json={"features": x}).json()
                   for x, _ in served]
        ids = [a["prediction_id"] for a in answers]

        # half over HTTP, as a list ...
        over_http = [{"prediction_id": ids[i], "label": int(served[i][1])} for i in range(20)]
        accepted = serving.post("/v1/feedback", json=over_http)
        assert accepted.status_code == 202 and accepted.json() == {"accepted": 20}
        # ... and half as label-only records on data.labeled
        publish(platform, [LabeledRecord(prediction_id=ids[i], label=int(served[i][1]))
                           for i in range(20, 40)])
        # a label no model takes is refused at the door
        refused = serving.post("/v1/feedback", json={"prediction_id": ids[0], "label": "yes"})
        assert refused.status_code == 422 and refused.json()["fields"][0]["field"] == "label"

        status = wait_for(lambda: (s := monitoring.get("/v1/status").json())[MODEL]["labeled"]
                          >= 40 and s, "monitoring to score the 40 outcomes", 60)
        assert status[MODEL]["labeled"] == 40  # each once, whichever way it came

        # live metrics per version: the 40 answers and their labels, in their minute(s)
        live = monitoring.get(f"/v1/models/{MODEL}/live", params={"window": 3600}).json()
        assert sum(w["predictions"] for w in live["windows"]) == 40
        assert sum(w["labeled"] for w in live["windows"]) == 40
        right = sum(a["prediction"] == int(y) for a, (_, y) in zip(answers, served, strict=True))
        assert sum(w["accuracy"] * w["labeled"] for w in live["windows"]) == pytest.approx(right)
        assert {w["version"] for w in live["windows"]} == {answers[0]["version"]}
        exported = monitoring.get("/metrics").text
        assert f'driftloop_live_labeled{{model="{MODEL}",version="{answers[0]["version"]}",' \
               f'window="3600s"}} 40.0' in exported

    store = DatasetStore(platform.data_dir / "datasets")
    expected = {f"feedback-{ids[i]}": (served[i][0], int(served[i][1])) for i in range(40)}

    def completed() -> dict[str, Any]:
        return {r.record_id: r for r in store.records("loans") if r.record_id in expected}

    records = wait_for(lambda: len(got := completed()) == 40 and got,
                       "the 40 completed records in the dataset store", 60)
    for record_id, (features, label) in expected.items():
        record = records[record_id]
        assert record.label == label and record.prediction_id == record_id[len("feedback-"):]
        assert record.features == pytest.approx(features)  # the prediction's own features

    # feedback for a prediction never made waits out the TTL, then is dead-lettered
    orphan = "no-such-prediction"
    with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving:
        assert serving.post("/v1/feedback",
                            json={"prediction_id": orphan, "label": 1}).status_code == 202
        time.sleep(TTL + 1)
        # expiry is noticed when the join next takes feedback
        assert serving.post("/v1/feedback",
                            json={"prediction_id": "another", "label": 1}).status_code == 202
    letters = wait_for(lambda: [d for d in events(platform.bootstrap or "", Topic.DATA_REJECTED,
                                                  RecordRejected) if d.key == orphan],
                       "the orphan feedback's dead letter", 60)
    assert "no prediction 'no-such-prediction' seen" in letters[0].reason
    assert letters[0].rejected_by == "monitoring"
    assert f"feedback-{orphan}" not in {r.record_id for r in store.records("loans")}
