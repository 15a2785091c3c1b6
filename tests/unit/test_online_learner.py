"""The online learner on short River streams: snapshot cadence, test-then-train metrics, the
champion scored on the same records it never learned, signatures, restart, and the lock."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from river.datasets import synth

from contracts.events import LifecycleAction, ModelTrained, RecordValidated
from contracts.http import ModelVersionView
from services.registry.handlers import judge
from services.training.evaluation import score, score_predictions
from services.training.online import OnlineLearner
from services.training.online_runner import take_lock
from shared.artifacts import ArtifactStore
from shared.datasets import DatasetStore
from shared.errors import SignatureInvalid
from shared.pipelines import ESTIMATORS, build_pipeline
from shared.project import Project
from tests.unit.factories import T0, TRAINING_KEY

MODEL = "sea-online"
SEGMENT = 50
PIPELINE = [{"estimator": "forest.ARFClassifier", "params": {"n_models": 3}}]


def project(every: int = 200, window: int = 100, warm_up: int = 100,
            seconds: float = 0, early: int = 0, when_better: bool = False) -> Project:
    return Project.model_validate({
        "datasets": {"sea": {
            "features": {f"x{i}": {"type": "float", "min": 0, "max": 10} for i in range(3)},
            "label": {"type": "int", "categories": [0, 1]}}},
        "models": {MODEL: {
            "dataset": "sea", "pipeline": PIPELINE, "training": {"seed": 7},
            "online": {"snapshot_every_records": every, "prequential_window": window,
                       "warm_up_records": warm_up, "snapshot_every_seconds": seconds,
                       "early_snapshot_records": early, "offer_when_better": when_better},
            "policy": {"promotion_margin": 0.01}}}})


def sea_stream(n: int, drift_at: int | None = None, seed: int = 1) -> list[RecordValidated]:
    """SEA variant 0, switching abruptly to variant 2 at `drift_at`."""
    stream: Iterable[tuple[dict[str, Any], Any]] = synth.SEA(variant=0, seed=seed)
    if drift_at is not None:
        stream = synth.ConceptDriftStream(synth.SEA(variant=0, seed=seed),
                                          synth.SEA(variant=2, seed=seed + 1), seed=seed,
                                          position=drift_at, width=20)
    return [RecordValidated(dataset="sea", record_id=f"r{i}",
                            features={f"x{k}": float(v) for k, v in x.items()}, label=int(y),
                            event_time=T0, ingested_at=T0, sequence=i)
            for i, (x, y) in enumerate(itertools.islice(stream, n))]


class Harness:
    """A dataset store fed segment by segment, and learners over it."""

    def __init__(self, root: Path, spec: Project) -> None:
        self.project = spec
        self.datasets = DatasetStore(root / "datasets")
        self.artifacts = ArtifactStore(root / "artifacts", signer=TRAINING_KEY)
        self.state = root / "online"
        self.appended = 0

    def learner(self) -> OnlineLearner:
        return OnlineLearner(MODEL, self.project, self.datasets, self.artifacts, TRAINING_KEY,
                             self.state)

    def append(self, records: list[RecordValidated]) -> None:
        for start in range(0, len(records), SEGMENT):
            self.datasets.append("sea", records[start:start + SEGMENT], T0)
        self.appended += len(records)

    def stream_through(self, learner: OnlineLearner, records: list[RecordValidated],
                       champion: ModelVersionView | None = None) -> list[ModelTrained]:
        """Append segment by segment; after each, learn and snapshot when due (as the runner
        does)."""
        runs = []
        for start in range(0, len(records), SEGMENT):
            self.append(records[start:start + SEGMENT])
            learner.follow(champion)
            learner.catch_up()
            if learner.due():
                run = learner.snapshot(champion)
                if run is not None:
                    runs.append(run)
        return runs


def as_champion(run: ModelTrained, version: int) -> ModelVersionView:
    return ModelVersionView(model=run.model, version=version, run_id=run.run_id,
                            stage="champion", metric=run.metric, metrics=run.metrics,
                            artifact=run.artifact, lineage=run.lineage, created_at=T0)


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path, project())


def test_snapshots_come_every_n_records_after_warm_up(tmp_path: Path) -> None:
    harness = Harness(tmp_path, project(every=200, warm_up=300))
    runs = harness.stream_through(harness.learner(), sea_stream(1000))

    assert [run.lineage.records for run in runs] == [300, 500, 700, 900]
    assert [run.request_id for run in runs] == [f"online-{MODEL}-{n}" for n in (1, 2, 3, 4)]
    first = runs[0]
    assert first.lineage.hyperparameters["mode"] == "online"
    assert first.lineage.hyperparameters["evaluation"] == "prequential"
    assert first.lineage.dataset == "sea" and first.lineage.seed == 7
    assert first.lineage.pipeline == PIPELINE
    # the lineage snapshot holds exactly the records learned, in the store
    snapshot = harness.datasets.open_snapshot("sea", first.lineage.snapshot_id)
    assert [r.record_id for r in harness.datasets.read(snapshot)] == [
        f"r{i}" for i in range(300)]
    assert first.baseline_version is None and first.baseline_metrics is None


def test_snapshots_also_come_after_t_seconds_with_new_records(tmp_path: Path) -> None:
    harness = Harness(tmp_path, project(every=10_000, seconds=30))
    now = [0.0]
    learner = OnlineLearner(MODEL, harness.project, harness.datasets, harness.artifacts,
                            TRAINING_KEY, harness.state, clock=lambda: now[0])
    records = sea_stream(300)
    harness.append(records[:250])
    learner.catch_up()
    assert not learner.due()  # 250 records, far from 10,000, and no time has passed
    now[0] = 30.0
    assert learner.due()
    assert learner.snapshot(None) is not None
    now[0] = 90.0
    assert not learner.due()  # time passed, but nothing new to learn
    harness.append(records[250:])
    learner.catch_up()
    assert learner.due()


def test_metrics_are_test_then_train_on_the_newest_window(harness: Harness) -> None:
    records = sea_stream(400)
    runs = harness.stream_through(harness.learner(), records)
    assert len(runs) == 2

    # an independent copy of the pipeline, predicting each record before learning it
    model = build_pipeline(PIPELINE, seed=7)
    outcomes = []
    for record in records:
        outcomes.append((record.label, model.predict_one(record.features)))
        model.learn_one(record.features, record.label)
    expected = score_predictions(outcomes[-100:], "classification")
    assert runs[1].metrics == pytest.approx(expected)
    assert runs[1].holdout.start == 300 and runs[1].holdout.size == 100
    # train-then-test on the same records would score higher: the window was not seen first
    assert score(model, records[-100:], "classification")["accuracy"] > expected["accuracy"]


def test_the_champion_is_scored_on_the_same_records_it_never_learned(tmp_path: Path) -> None:
    harness = Harness(tmp_path, project(every=200, window=300))
    learner = harness.learner()
    first = harness.stream_through(learner, sea_stream(200))[0]
    champion = as_champion(first, version=1)
    later = sea_stream(400)[200:]
    runs = harness.stream_through(learner, later, champion)

    run = runs[0]
    assert run.baseline_version == 1
    # the window holds records 100..399; both are scored on those v1 never learned (200..399)
    assert run.holdout.start == 200 and run.holdout.size == 200
    frozen = harness.artifacts.load_model(first.artifact)
    assert run.baseline_metrics == pytest.approx(score(frozen, later, "classification"))
    assert run.lineage.hyperparameters["compared_records"] == 200


def test_a_snapshot_waits_while_the_champion_learned_the_window(harness: Harness) -> None:
    learner = harness.learner()
    first = harness.stream_through(learner, sea_stream(200))[0]
    # a champion that learned everything so far: nothing to compare it on yet
    harness.append(sea_stream(400)[200:400])
    learner.catch_up()
    latest = learner.snapshot(None)
    assert latest is not None and latest.lineage.records == 400

    assert learner.snapshot(as_champion(latest, version=2)) is None
    assert not learner.due()  # no retry until more records arrive
    assert first.request_id != latest.request_id


def test_snapshots_beat_a_frozen_champion_after_a_drift(tmp_path: Path) -> None:
    harness = Harness(tmp_path, project(every=300, window=300))
    records = sea_stream(1500, drift_at=600)
    learner = harness.learner()
    before = harness.stream_through(learner, records[:600])
    champion = as_champion(before[-1], version=1)
    after = harness.stream_through(learner, records[600:], champion)

    assert after, "no snapshot after the drift"
    last = after[-1]
    assert last.baseline_metrics is not None
    assert last.metrics["accuracy"] > last.baseline_metrics["accuracy"]


def champion_after(harness: Harness, learner: OnlineLearner,
                   records: list[RecordValidated]) -> ModelVersionView:
    """Stream `records` through `learner` with no champion, and make its snapshot of them v1
    (nothing offered meanwhile: these tests set the cadence beyond them)."""
    assert harness.stream_through(learner, records) == []
    run = learner.snapshot(None)
    assert run is not None
    return as_champion(run, version=1)


def flipped(records: list[RecordValidated]) -> list[RecordValidated]:
    """The same records with every label flipped: a drift the champion gets all wrong."""
    return [r.model_copy(update={"label": 1 - r.label}) for r in records]


def test_a_learner_that_beats_the_champion_snapshots_at_once(tmp_path: Path) -> None:
    # the cadence is far away (2,000 records); the champion is right on none of the
    # records after a label flip, so waiting for the cadence would serve it for 2,000
    harness = Harness(tmp_path, project(every=2000, window=300, early=50))
    records = sea_stream(1400)
    learner = harness.learner()
    champion = champion_after(harness, learner, records[:600])
    runs = harness.stream_through(learner, flipped(records[600:]), champion)

    assert runs, "no snapshot before the cadence although the champion lost every record"
    first = runs[0]
    assert first.lineage.records <= 600 + 300
    # what the registry will decide: better than the champion on the same records
    assert judge(first, 1, harness.project.model(MODEL).policy)[0] is LifecycleAction.PROMOTED
    assert first.holdout.size >= 50


def test_a_learner_no_better_than_the_champion_waits_for_the_cadence(tmp_path: Path) -> None:
    harness = Harness(tmp_path, project(every=5000, window=300, early=50))
    records = sea_stream(3000)
    learner = harness.learner()
    champion = champion_after(harness, learner, records[:2000])
    # the same concept: the learner is not significantly better than its own past self
    assert harness.stream_through(learner, records[2000:], champion) == []


def with_registry(harness: Harness, learner: OnlineLearner, records: list[RecordValidated],
                  champion: ModelVersionView) -> tuple[list[ModelTrained], ModelVersionView]:
    """Stream as the runner does, the registry's gate deciding each snapshot: the runs
    offered, and the champion at the end."""
    policy, offered = harness.project.model(MODEL).policy, []
    for start in range(0, len(records), SEGMENT):
        harness.append(records[start:start + SEGMENT])
        learner.follow(champion)
        learner.catch_up()
        if learner.due() and (run := learner.snapshot(champion)) is not None:
            offered.append(run)
            if judge(run, champion.version, policy)[0] is LifecycleAction.PROMOTED:
                champion = as_champion(run, champion.version + 1)
    return offered, champion


@pytest.mark.parametrize("when_better", [False, True])
def test_only_snapshots_that_beat_the_champion_are_offered(tmp_path: Path,
                                                           when_better: bool) -> None:
    harness = Harness(tmp_path, project(every=100, window=300, when_better=when_better))
    records = sea_stream(3000)
    learner = harness.learner()
    harness.stream_through(learner, records[:1000])
    first = as_champion(learner.snapshot(None), version=1)  # type: ignore[arg-type]
    stationary, champion = with_registry(harness, learner, records[1000:2000], first)
    drifted, _ = with_registry(harness, learner, flipped(records[2000:]), champion)

    policy = harness.project.model(MODEL).policy
    rejected = [run for run in stationary + drifted
                if judge(run, run.baseline_version, policy)[0] is LifecycleAction.REJECTED]
    if when_better:  # nothing the registry rejects is offered, and after the flip the
        assert rejected == []  # adapted learner still reaches it
        assert len(drifted) >= 2
    else:  # every cadence offers one: on a stationary stream most are rejected
        assert len(stationary) == 10 and len(rejected) >= 5


def test_early_snapshots_can_be_turned_off(tmp_path: Path) -> None:
    harness = Harness(tmp_path, project(every=2000, window=300, early=0))
    records = sea_stream(1400)
    learner = harness.learner()
    champion = champion_after(harness, learner, records[:600])
    assert harness.stream_through(learner, flipped(records[600:]), champion) == []


def test_runs_are_signed_by_training(harness: Harness) -> None:
    run = harness.stream_through(harness.learner(), sea_stream(200))[0]
    verifier = TRAINING_KEY.verifier()
    verifier.verify_run(run)
    verifier.verify_artifact(run.artifact)
    forged = run.model_copy(update={"metrics": {**run.metrics, "accuracy": 1.0}})
    with pytest.raises(SignatureInvalid):
        verifier.verify_run(forged)


def test_a_restarted_learner_resumes_where_the_first_stopped(harness: Harness) -> None:
    records = sea_stream(700)
    first = harness.learner()
    runs = harness.stream_through(first, records[:450])  # snapshots at 200 and 400
    assert len(runs) == 2

    second = harness.learner()
    assert second.restore() == runs[-1]  # never marked published: to be published again
    second.catch_up()  # replays the 50 records after the last snapshot

    assert (second.learned, second.snapshots) == (450, 2)
    assert [(o.position, o.predicted) for o in second.window] == [
        (o.position, o.predicted) for o in first.window]
    probes = sea_stream(100, seed=99)
    assert [second.model.predict_proba_one(r.features) for r in probes] == [
        first.model.predict_proba_one(r.features) for r in probes]
    # both go on alike: the next snapshot is the third, with the same metrics
    resumed = harness.stream_through(second, records[450:600])
    first.catch_up()
    assert first.due()
    assert resumed[0].request_id == f"online-{MODEL}-3"
    assert resumed[0].metrics == first.snapshot(None).metrics  # type: ignore[union-attr]


def test_a_regression_learner_scores_and_resumes(tmp_path: Path) -> None:
    spec = Project.model_validate({
        "datasets": {"friedman": {
            "features": {f"x{i}": {"type": "float"} for i in range(10)},
            "label": {"type": "float"}}},
        "models": {MODEL: {
            "dataset": "friedman", "task": "regression", "policy": {"metric": "mae"},
            "pipeline": [{"estimator": "forest.ARFRegressor", "params": {"n_models": 2}}],
            "online": {"snapshot_every_records": 100, "prequential_window": 50,
                       "warm_up_records": 100}}}})
    datasets = DatasetStore(tmp_path / "datasets")
    rows = [RecordValidated(dataset="friedman", record_id=f"f{i}",
                            features={f"x{k}": float(v) for k, v in x.items()}, label=float(y),
                            event_time=T0, ingested_at=T0, sequence=i)
            for i, (x, y) in enumerate(synth.FriedmanDrift(seed=3).take(150))]
    datasets.append("friedman", rows[:100], T0)
    artifacts = ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY)
    learner = OnlineLearner(MODEL, spec, datasets, artifacts, TRAINING_KEY, tmp_path / "s")
    learner.catch_up()
    run = learner.snapshot(None)
    assert run is not None and run.metric == "mae" and run.metrics["mae"] > 0
    datasets.append("friedman", rows[100:], T0)
    again = OnlineLearner(MODEL, spec, datasets, artifacts, TRAINING_KEY, tmp_path / "s")
    again.restore()
    again.catch_up()
    learner.catch_up()
    assert [o.predicted for o in again.window] == [o.predicted for o in learner.window]


def test_a_published_snapshot_is_not_published_again(harness: Harness) -> None:
    learner = harness.learner()
    run = harness.stream_through(learner, sea_stream(200))[0]
    learner.published(run)
    assert harness.learner().restore() is None


def test_a_tampered_snapshot_is_not_loaded_the_learner_relearns(harness: Harness) -> None:
    learner = harness.learner()
    run = harness.stream_through(learner, sea_stream(250))[0]
    harness.artifacts.path(run.artifact.digest).write_bytes(b"not the model")

    again = harness.learner()
    assert again.restore() is None
    again.catch_up()
    assert (again.learned, again.snapshots) == (250, 0)


def test_one_writer_per_model(tmp_path: Path) -> None:
    held = take_lock(tmp_path / "m.lock")
    assert held is not None
    try:
        assert take_lock(tmp_path / "m.lock") is None
    finally:
        os.close(held)
    again = take_lock(tmp_path / "m.lock")
    assert again is not None


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_allowlisted_estimator_builds_from_scalars_and_a_seed(name: str) -> None:
    model = build_pipeline([{"estimator": name, "params": {}}], seed=3)
    x = {"a": 1.0, "b": 2.0}
    target: Any = 1.5 if "Regressor" in name or name.endswith("LinearRegression") else 1
    if name.startswith("preprocessing."):
        model.learn_one(x)
        assert model.transform_one(x) is not None
    else:
        model.learn_one(x, target)
        model.predict_one(x)


async def test_the_learner_keeps_learning_while_the_registry_is_unreachable(
        harness: Harness) -> None:
    """A registry that cannot be asked holds back comparisons and snapshots, never learning."""
    import asyncio

    from services.training.online_runner import run_learner
    from shared.broker import free_port

    learner = harness.learner()
    harness.append(sea_stream(300))
    stopping = asyncio.Event()
    task = asyncio.create_task(run_learner(
        None, lambda: learner, f"http://127.0.0.1:{free_port()}", stopping,  # type: ignore[arg-type]
        poll_seconds=0.01))
    for _ in range(1000):  # a bound on waiting, not a timing claim
        if learner.learned == 300 or task.done():
            break
        await asyncio.sleep(0.01)
    stopping.set()
    await task
    assert learner.learned == 300
    assert learner.snapshots == 0  # due, but the champion could not be asked
