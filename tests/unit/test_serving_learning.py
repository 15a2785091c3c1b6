"""Serving that goes on learning ([models.X.serving] learn): a swapped-in version first learns
what was logged after its training data, then every new record, in log order; predictions say
how far the answering model had learned; a prediction in a worker thread holds learning off."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import tree

from contracts.events import DataWindow, Lineage, RecordValidated
from services.serving.handlers import Predictor
from services.serving.learning import ServingLearner
from services.serving.models import ModelManager
from shared.artifacts import ArtifactStore
from shared.datasets import DatasetStore
from shared.errors import DependencyUnavailable
from shared.project import Project
from tests.unit.factories import T0, TRAINING_KEY, demo_project, validated_rows

MODEL = "loans-tree"
PROBES = [r.features for r in validated_rows(40, seed=99)]


def learning_project(replay_records: int = 50_000, learn: bool = True) -> Project:
    raw = demo_project().model_dump(mode="json")
    raw["models"][MODEL]["serving"] = {"learn": learn, "replay_records": replay_records}
    return Project.model_validate(raw)


def trained_on(records: list[RecordValidated]) -> tree.HoeffdingTreeClassifier:
    model = tree.HoeffdingTreeClassifier(grace_period=30)
    for record in records:
        model.learn_one(record.features, record.label)
    return model


def outputs(model: Any) -> list[dict[Any, float]]:
    return [model.predict_proba_one(x) for x in PROBES]


class Platform:
    """A dataset store, an artifact store, serving's learner and model manager, and the
    lineage the registry would answer."""

    def __init__(self, root: Path, project: Project) -> None:
        self.datasets = DatasetStore(root / "datasets")
        self.artifacts = ArtifactStore(root / "artifacts", signer=TRAINING_KEY)
        self.lineages: dict[int, Lineage | None] = {}
        self.asked: list[tuple[str, int]] = []
        self.learner = ServingLearner(project, self.datasets, self.lineage_of, chunk=50)
        self.models = ModelManager(self.artifacts, declared=[MODEL],
                                   prepare=self.learner.prepare)
        self.rows = validated_rows(900)
        self.logged = 0

    async def lineage_of(self, model: str, version: int) -> Lineage | None:
        self.asked.append((model, version))
        return self.lineages.get(version)

    def log(self, n: int, per_segment: int = 25) -> None:
        for start in range(self.logged, self.logged + n, per_segment):
            self.datasets.append("loans", self.rows[start:start + per_segment], T0)
        self.logged += n

    async def load(self, version: int, records: list[RecordValidated],
                   lineage: bool = True) -> None:
        """Train on `records` (the log's first ones), snapshot them, and load the version."""
        snapshot = self.datasets.snapshot("loans", last=None)
        if lineage:
            self.lineages[version] = Lineage(
                dataset="loans", snapshot_id=snapshot.snapshot_id, records=snapshot.records,
                window=DataWindow(), pipeline=[], seed=1, code_version="test")
        model = trained_on(records)
        assert await self.models.load(MODEL, version, self.artifacts.save_model(model))

    def learn_all(self) -> int:
        learned = 0
        while (count := self.learner.step(self.models, MODEL)) > 0:
            learned += count
        return learned


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return Platform(tmp_path, learning_project())


async def test_a_swapped_in_version_first_learns_what_was_logged_after_its_data(
        platform: Platform) -> None:
    platform.log(300)
    snapshot = platform.datasets.snapshot("loans")
    platform.lineages[1] = Lineage(dataset="loans", snapshot_id=snapshot.snapshot_id,
                                   records=300, window=DataWindow(), pipeline=[], seed=1,
                                   code_version="test")
    artifact = platform.artifacts.save_model(trained_on(platform.rows[:300]))
    platform.log(200)  # logged after the version's training data, before it is loaded

    assert await platform.models.load(MODEL, 1, artifact)

    served = platform.models.get(MODEL)
    assert served.learned is not None and served.learned.through == 500
    assert platform.asked == [(MODEL, 1)]
    assert outputs(served.estimator) == outputs(trained_on(platform.rows[:500]))


async def test_the_served_version_learns_each_new_record_in_log_order(
        platform: Platform) -> None:
    platform.log(300)
    await platform.load(1, platform.rows[:300])
    served = platform.models.get(MODEL)
    before = outputs(served.estimator)

    platform.log(400)
    assert platform.learner.pending(platform.models, MODEL) == 400
    assert platform.learn_all() == 400

    assert served.learned is not None and served.learned.through == 700
    assert platform.learner.pending(platform.models, MODEL) == 0
    assert outputs(served.estimator) == outputs(trained_on(platform.rows[:700]))
    assert outputs(served.estimator) != before


async def test_learning_goes_in_chunks_so_requests_get_the_loop_between(
        platform: Platform) -> None:
    platform.log(100)
    await platform.load(1, platform.rows[:100])
    platform.log(125)
    assert [platform.learner.step(platform.models, MODEL) for _ in range(4)] == [50, 50, 25, 0]


async def test_each_prediction_event_says_how_far_its_model_had_learned(
        platform: Platform) -> None:
    platform.log(300)
    await platform.load(1, platform.rows[:300])
    platform.log(50)
    platform.learn_all()
    predictor = Predictor(demo_project(), platform.models, deliver=_nowhere)

    answer = predictor.predict(MODEL, PROBES[:3], ["features"] * 3)

    events = [orjson.loads(body) for _, body in answer.events]
    assert [event["learned_through"] for event in events] == [350, 350, 350]
    assert [event["version"] for event in events] == [1, 1, 1]


async def test_a_model_that_does_not_learn_in_serving_is_served_as_gated(
        tmp_path: Path) -> None:
    platform = Platform(tmp_path, learning_project(learn=False))
    platform.log(300)
    await platform.load(1, platform.rows[:300])
    platform.log(100)

    assert platform.models.get(MODEL).learned is None
    assert platform.learn_all() == 0
    assert platform.asked == []
    answer = Predictor(demo_project(), platform.models, deliver=_nowhere).predict(
        MODEL, PROBES[:1], ["features"])
    assert "learned_through" not in orjson.loads(answer.events[0][1])


async def test_a_prediction_in_a_worker_thread_holds_learning_off(platform: Platform) -> None:
    platform.log(100)
    await platform.load(1, platform.rows[:100])
    platform.log(50)
    served = platform.models.get(MODEL)
    assert served.learned is not None
    reading, release = threading.Event(), threading.Event()

    def batch_prediction() -> None:
        with served.learned.guard.reading():  # type: ignore[union-attr]
            reading.set()
            release.wait(5)

    thread = threading.Thread(target=batch_prediction)
    thread.start()
    reading.wait(5)
    try:
        assert platform.learner.step(platform.models, MODEL) == 0  # skipped, not blocked
        assert served.learned.through == 100
    finally:
        release.set()
        thread.join()
    assert platform.learner.step(platform.models, MODEL) == 50


async def test_replay_at_a_swap_is_bounded_to_the_newest_records(tmp_path: Path) -> None:
    platform = Platform(tmp_path, learning_project(replay_records=100))
    platform.log(200)
    snapshot = platform.datasets.snapshot("loans")
    platform.lineages[1] = Lineage(dataset="loans", snapshot_id=snapshot.snapshot_id,
                                   records=200, window=DataWindow(), pipeline=[], seed=1,
                                   code_version="test")
    artifact = platform.artifacts.save_model(trained_on(platform.rows[:200]))
    platform.log(300)

    assert await platform.models.load(MODEL, 1, artifact)

    served = platform.models.get(MODEL)
    assert served.learned is not None and served.learned.through == 500
    expected = trained_on(platform.rows[:200] + platform.rows[400:500])
    assert outputs(served.estimator) == outputs(expected)


@pytest.mark.parametrize("failure", ["unknown", "unreachable"])
async def test_a_version_whose_lineage_cannot_be_had_learns_from_the_log_end_on(
        platform: Platform, failure: str) -> None:
    async def unreachable(model: str, version: int) -> Lineage | None:
        raise DependencyUnavailable(dependency="registry", detail="connection refused")

    if failure == "unreachable":
        platform.learner.lineage = unreachable
    platform.log(300)
    await platform.load(1, platform.rows[:200], lineage=False)

    served = platform.models.get(MODEL)
    assert served.learned is not None and served.learned.through == 300
    assert outputs(served.estimator) == outputs(trained_on(platform.rows[:200]))


async def test_a_learned_estimator_is_not_reused_for_a_version_with_its_old_bytes(
        platform: Platform) -> None:
    platform.log(300)
    await platform.load(1, platform.rows[:300])
    first = platform.models.get(MODEL).estimator
    platform.log(100)
    platform.learn_all()
    artifact = platform.artifacts.save_model(trained_on(platform.rows[:300]))  # v1's bytes

    assert await platform.models.load(MODEL, 2, artifact)

    assert platform.models.get(MODEL).estimator is not first


async def _nowhere(events: list[tuple[str, bytes]]) -> None:
    return None
