"""Progressive challengers (issue 6): a drift request of a model with `retrain_windows` is
trained as a ladder of growing post-change windows, each candidate against the champion of
its time, until one stops improving; a restart resumes the ladder.

The registry is a fake that applies the registry's own `judge` to every published run."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from contracts.events import (
    DataWindow,
    LifecycleAction,
    ModelTrained,
    RecordValidated,
    TrainingReason,
    TrainingRequested,
)
from contracts.http import ModelVersionView
from contracts.topics import Topic
from services.registry.handlers import judge
from services.training import consumers
from services.training.consumers import Intake, request_handler
from services.training.handlers import Trainer, against_baseline
from services.training.settings import TrainingSettings
from shared.artifacts import ArtifactStore
from shared.consumer import Delivery
from shared.datasets import DatasetStore
from shared.envelope import Envelope
from shared.project import PolicySpec, Project
from tests.unit.factories import (
    PROJECT_FILE,
    T0,
    TRAINING_KEY,
    agrawal,
    demo_project,
    model_trained,
)

MODEL = "loans-tree"
CHANGE = T0 + timedelta(hours=1)
"""The change point monitoring estimated: the ladder's windows start here."""


def project(windows: list[int]) -> Project:
    raw = demo_project().model_dump(mode="json")
    raw["models"][MODEL]["policy"].update(retrain_windows=windows, promotion_margin=0.01)
    raw["models"][MODEL]["training"]["passes"] = 1  # fast; the ladder is what is tested
    return Project.model_validate(raw)


class Registry:
    """The registry's gate over published runs: versions from 1, the same `judge`."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.champion: ModelVersionView | None = None
        self.versions = 0
        self.decisions: list[tuple[str, LifecycleAction]] = []
        self.pending: list[ModelTrained] = []
        self.deciding = True
        """False: runs wait in `pending` until `decide()` (a registry that lags)."""

    def record(self, run: ModelTrained) -> None:
        self.pending.append(run)
        if self.deciding:
            self.decide()

    def decide(self) -> None:
        for run in self.pending:
            action, _ = judge(run, self.champion.version if self.champion else None,
                              self.policy)
            self.versions += 1
            self.decisions.append((run.run_id, action))
            if action is LifecycleAction.PROMOTED:
                self.champion = ModelVersionView(
                    model=run.model, version=self.versions, run_id=run.run_id,
                    request_id=run.request_id, stage="champion", metric=run.metric,
                    metrics=run.metrics, artifact=run.artifact, lineage=run.lineage,
                    created_at=T0)
        self.pending = []


class Bus:
    source = "training"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.trained: list[ModelTrained] = []

    async def publish(self, topic: Topic, event: Any, key: str, ce_id: str | None = None,
                      trace_id: str | None = None) -> None:
        if isinstance(event, ModelTrained):
            assert ce_id == event.run_id  # the registry de-duplicates by run id
            self.trained.append(event)
            self.registry.record(event)


def rows(start: int, n: int, at: datetime, label: int | None = None) -> list[RecordValidated]:
    """Agrawal records observed (and ingested) at `at`; `label` overrides the concept."""
    return [RecordValidated(dataset="loans", record_id=f"rec-{start + i:06d}", features=x,
                            label=y if label is None else label, event_time=at,
                            ingested_at=at, sequence=start + i)
            for i, (x, y) in enumerate(agrawal(start + n, seed=5)[start:])]


class World:
    """A dataset that drifted at CHANGE (afterwards every loan is repaid: label 1), a
    champion trained before it, and training's intake on disk under `root`."""

    def __init__(self, root: Path, windows: list[int]) -> None:
        self.root = root
        self.project = project(windows)
        self.registry = Registry(self.project.model(MODEL).policy)
        self.bus = Bus(self.registry)
        self.datasets = DatasetStore(root / "datasets")
        self.datasets.append("loans", rows(0, 1000, T0), T0)
        self.post_change = 0
        self.intake = self.restart()
        first = self.intake.trainer.train(
            TrainingRequested(request_id="initial", model=MODEL,
                              reason=TrainingReason.INITIAL_DATA, requested_by="training"),
            None)
        self.registry.record(first)
        self.bus.trained.clear()

    def restart(self) -> Intake:
        """Training as a new process on the same disk would build it."""
        settings = TrainingSettings(config=PROJECT_FILE, data_dir=self.root,
                                    window_wait_seconds=3600)
        trainer = Trainer(self.project, self.datasets,
                          ArtifactStore(self.root / "artifacts", signer=TRAINING_KEY),
                          self.root / "training", TRAINING_KEY)
        self.intake = Intake(trainer, settings)
        return self.intake

    def arrive(self, n: int) -> None:
        """`n` more post-change records, ingested after the change point."""
        at = CHANGE + timedelta(seconds=self.post_change + 1)
        self.datasets.append("loans", rows(1000 + self.post_change, n, at, label=1), at)
        self.post_change += n

    async def work(self) -> None:
        """One pass of the training worker over the parked requests."""
        for parked in self.intake.queue.waiting():
            await consumers._try(self.bus, self.intake, parked)  # type: ignore[arg-type]

    def parked_rungs(self) -> list[int]:
        return [p.rung for p in self.intake.queue.waiting()]



def drift_request(request_id: str = "drift-1", last: int = 5000) -> TrainingRequested:
    return TrainingRequested(request_id=request_id, model=MODEL, reason=TrainingReason.DRIFT,
                             window=DataWindow(since=CHANGE, last=last, min_records=1000),
                             requested_by="monitoring")


def delivery(event: TrainingRequested) -> Delivery:
    record = SimpleNamespace(topic="training.requests", partition=0, offset=0,
                             key=event.model.encode())
    return Delivery(Topic.TRAINING_REQUESTS, event,
                    Envelope(event.request_id, "", "test", "", "0" * 32), record)  # type: ignore[arg-type]


@pytest.fixture
def registry_answers(monkeypatch: pytest.MonkeyPatch) -> list[World]:
    """Point training's champion look-up at the world's fake registry."""
    worlds: list[World] = []

    async def champion(url: str, model: str) -> ModelVersionView | None:
        return worlds[0].registry.champion

    monkeypatch.setattr(consumers, "fetch_champion", champion)
    return worlds


@pytest.fixture
def world(tmp_path: Path, registry_answers: list[World]) -> World:
    made = World(tmp_path, [200, 500, 1000])
    registry_answers.append(made)
    return made


def windows_of(runs: list[ModelTrained]) -> list[int | None]:
    return [run.lineage.window.last for run in runs]


async def test_rungs_train_as_data_arrives_and_stop_at_the_first_not_better(
        world: World) -> None:
    await request_handler(world.bus, world.intake)([delivery(drift_request())])  # type: ignore[arg-type]
    world.arrive(150)
    await world.work()
    assert world.bus.trained == [] and world.parked_rungs() == [0]  # waits for 200, not 1000

    world.arrive(100)
    await world.work()
    [first] = world.bus.trained
    assert windows_of([first]) == [200] and first.lineage.records == 200
    assert first.request_id == "drift-1" and first.baseline_version == 1
    assert first.lineage.hyperparameters["rung"] == 1
    assert first.lineage.hyperparameters["rungs"] == [200, 500, 1000]
    assert first.holdout.size == 40  # holdout_fraction still applies to a rung
    assert world.registry.decisions[-1] == (first.run_id, LifecycleAction.PROMOTED)
    assert world.parked_rungs() == [1]

    world.arrive(300)
    await world.work()
    first_again, second = world.bus.trained
    assert first_again is first and windows_of([second]) == [500]
    assert second.baseline_version == 2  # the then-current champion: rung 1's candidate
    # The new concept is already learned: rung 2 ties its champion, which is not better.
    assert second.baseline_metrics is not None
    assert second.metrics["accuracy"] == second.baseline_metrics["accuracy"] == 1.0
    assert world.registry.decisions[-1] == (second.run_id, LifecycleAction.REJECTED)
    assert world.parked_rungs() == []

    world.arrive(600)
    await world.work()
    assert len(world.bus.trained) == 2  # the ladder ended: no rung of 1000


async def test_a_first_rung_that_is_not_better_climbs_on(world: World) -> None:
    """"Until one stops improving": a small window may be too noisy to beat the champion
    while a larger one would; only a rung after an improvement ends the ladder. (On SEA a
    rejected first rung ended the ladder and the stale model served 1,100 samples more.)"""
    await request_handler(world.bus, world.intake)([delivery(drift_request())])  # type: ignore[arg-type]
    same = CHANGE + timedelta(seconds=1)  # no real change: the champion is as good as any
    world.datasets.append("loans", rows(1000, 250, same), same)
    await world.work()
    [first] = world.bus.trained
    assert world.registry.decisions[-1] == (first.run_id, LifecycleAction.REJECTED)
    assert world.parked_rungs() == [1]  # not the end: rung 2 waits for its data

    later = CHANGE + timedelta(seconds=2)
    world.datasets.append("loans", rows(1250, 300, later), later)
    await world.work()
    assert windows_of(world.bus.trained) == [200, 500]
    assert world.bus.trained[1].baseline_version == 1  # the champion rung 1 did not beat


async def test_without_retrain_windows_a_drift_request_trains_once(
        tmp_path: Path, registry_answers: list[World]) -> None:
    world = World(tmp_path, [])
    registry_answers.append(world)
    await request_handler(world.bus, world.intake)([delivery(drift_request())])  # type: ignore[arg-type]
    world.arrive(600)
    await world.work()
    assert world.bus.trained == [] and world.parked_rungs() == [0]  # waits for min_records
    world.arrive(400)
    await world.work()
    [run] = world.bus.trained
    assert run.lineage.window == drift_request().window and run.lineage.records == 1000
    assert "rung" not in run.lineage.hyperparameters
    assert world.parked_rungs() == [] and world.intake.trainer.runs("drift-1") == [run]


async def test_a_restart_mid_ladder_resumes_at_the_next_rung(world: World,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    handle = request_handler(world.bus, world.intake)  # type: ignore[arg-type]
    await handle([delivery(drift_request())])
    world.arrive(250)
    await world.work()
    [first] = world.bus.trained
    assert world.parked_rungs() == [1]

    trained: list[int | None] = []
    restarted = world.restart()
    real_train = restarted.trainer.train

    def counting(request: TrainingRequested, champion: Any, rung: int | None = None) -> Any:
        trained.append(rung)
        return real_train(request, champion, rung)

    monkeypatch.setattr(restarted.trainer, "train", counting)
    await request_handler(world.bus, restarted)([delivery(drift_request())])  # type: ignore[arg-type]
    await world.work()  # the request replayed and the worker ran: rung 1 has no data yet
    assert trained == [] and world.bus.trained == [first] and world.parked_rungs() == [1]

    world.arrive(250)
    await world.work()
    assert trained == [1]  # rung 0 is never trained again
    assert windows_of(world.bus.trained) == [200, 500]


async def test_a_rung_trained_before_a_crash_is_republished_not_retrained(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    await request_handler(world.bus, world.intake)([delivery(drift_request())])  # type: ignore[arg-type]
    world.arrive(500)
    world.registry.deciding = False  # rung 0 published, its decision not yet made
    await world.work()
    [first] = world.bus.trained
    assert world.parked_rungs() == [1]
    # Rung 1's data is there, but rung 1 waits: the champion it would be judged against is
    # still the one rung 0 was scored against.
    await world.work()
    assert world.bus.trained == [first]
    world.registry.decide()

    # Rung 1 trained and stored, then the process died before publishing it.
    request = world.intake.queue.waiting()[0].request
    stored = world.intake.trainer.train(request, world.registry.champion, 1)
    restarted = world.restart()
    monkeypatch.setattr(restarted.trainer, "train", lambda *args: pytest.fail("retrained"))
    await world.work()
    assert [run.run_id for run in world.bus.trained] == [first.run_id, stored.run_id]
    assert world.parked_rungs() == []  # it tied its champion: the ladder ended

    # A replay of the finished request re-publishes every rung, and parks nothing.
    await request_handler(world.bus, restarted)([delivery(drift_request())])  # type: ignore[arg-type]
    assert [run.run_id for run in world.bus.trained[2:]] == [first.run_id, stored.run_id]
    assert world.parked_rungs() == []


async def test_a_later_rung_whose_data_does_not_come_ends_the_ladder(world: World) -> None:
    await request_handler(world.bus, world.intake)([delivery(drift_request())])  # type: ignore[arg-type]
    world.arrive(300)
    await world.work()
    [parked] = world.intake.queue.waiting()
    assert parked.rung == 1
    await world.work()
    assert world.parked_rungs() == [1]  # waiting for 500 records, within its wait
    world.intake.queue.put(parked.model_copy(update={
        "rung_since": parked.waiting_since - timedelta(hours=2)}))
    await world.work()
    assert world.parked_rungs() == [] and len(world.bus.trained) == 1


def test_rungs_are_capped_by_the_request_and_never_below_the_minimum(world: World) -> None:
    trainer = world.intake.trainer
    assert trainer.rungs(drift_request()) == [200, 500, 1000]
    assert trainer.rungs(drift_request(last=600)) == [200, 500, 600]
    assert trainer.rungs(drift_request(last=150)) == [150]
    manual = drift_request().model_copy(update={"reason": TrainingReason.MANUAL})
    assert trainer.rungs(manual) == []
    trainer.min_records = 300
    assert trainer.rungs(drift_request()) == [300, 500, 1000]


@pytest.mark.parametrize(("metric", "candidate", "champion", "margin", "better"), [
    ("accuracy", 0.90, 0.80, 0.05, True),
    ("accuracy", 0.80, 0.90, 0.0, False),
    ("accuracy", 0.86, 0.85, 0.05, False),  # better, not by the margin
    ("accuracy", 0.85, 0.85, 0.0, False),  # a tie keeps the champion
    ("mae", 1.0, 2.0, 0.5, True),  # lower is better
    ("mae", 2.0, 1.0, 0.0, False),
    ("mae", 1.0, 1.0, 0.0, False),
    ("rmse", 0.9, 1.0, 0.0, True),
])
def test_training_climbs_exactly_when_the_registry_would_promote(
        metric: str, candidate: float, champion: float, margin: float, better: bool) -> None:
    run = model_trained("r", candidate, baseline_version=3, baseline_accuracy=champion,
                        metric=metric)
    policy = PolicySpec(metric=metric, promotion_margin=margin)
    action, reason = judge(run, 3, policy)
    verdict = against_baseline(run, policy)
    assert verdict.better is better is (action is LifecycleAction.PROMOTED)
    assert verdict.reason == reason


def test_a_missing_metric_is_not_better_for_either() -> None:
    run = model_trained("r", 0.9, baseline_version=1, baseline_accuracy=0.5)
    policy = PolicySpec(metric="f1")
    assert judge(run, 1, policy) == (LifecycleAction.REJECTED,
                                     "metric 'f1' missing from the evaluation")
    assert against_baseline(run, policy).better is False
