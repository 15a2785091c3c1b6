"""Training's intake: unknown models refused at once, a retrain budget per model (refusals
dead-lettered and alerted), requests parked durably so a window that never fills holds
nothing else back."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from contracts.events import (
    AlertRaised,
    DataWindow,
    ModelTrained,
    RecordRejected,
    TrainingReason,
    TrainingRequested,
)
from contracts.topics import Topic
from services.training import consumers
from services.training.consumers import Intake, request_handler, train_parked
from services.training.handlers import Trainer
from services.training.intake import RetrainBudget, park, safe_name
from services.training.settings import TrainingSettings
from shared.artifacts import ArtifactStore
from shared.consumer import Delivery
from shared.datasets import DatasetStore
from shared.envelope import Envelope
from tests.unit.factories import PROJECT_FILE, T0, TRAINING_KEY, project_with, validated_rows

MODEL = "loans-tree"


class Bus:
    source = "training"

    def __init__(self) -> None:
        self.published: list[tuple[Topic, Any]] = []

    async def publish(self, topic: Topic, event: Any, key: str, ce_id: str | None = None,
                      trace_id: str | None = None) -> None:
        self.published.append((topic, event))

    async def publish_raw(self, topic: Topic, value: bytes, key: bytes | None,
                          headers: list[tuple[str, bytes]]) -> None:
        self.published.append((topic, RecordRejected.model_validate_json(value)))

    def of(self, kind: type) -> list[Any]:
        return [event for _, event in self.published if isinstance(event, kind)]


def request(request_id: str, model: str = MODEL, min_records: int = 1) -> TrainingRequested:
    return TrainingRequested(request_id=request_id, model=model, reason=TrainingReason.MANUAL,
                             window=DataWindow(min_records=min_records), requested_by="test")


def delivery(event: TrainingRequested, offset: int = 0) -> Delivery:
    record = SimpleNamespace(topic="training.requests", partition=0, offset=offset,
                             key=event.model.encode())
    return Delivery(Topic.TRAINING_REQUESTS, event,
                    Envelope(event.request_id, "", "test", "", "0" * 32), record)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> TrainingSettings:
    return TrainingSettings(config=PROJECT_FILE, data_dir=tmp_path, window_wait_seconds=3600)


def make_intake(settings: TrainingSettings, budget: int = 2) -> Intake:
    datasets = DatasetStore(settings.data_dir / "datasets")
    if not datasets.size("loans"):
        datasets.append("loans", validated_rows(300, seed=3), T0)
    trainer = Trainer(project_with(max_retrains_per_hour=budget), datasets,
                      ArtifactStore(settings.data_dir / "artifacts", signer=TRAINING_KEY),
                      settings.data_dir / "training", TRAINING_KEY)
    return Intake(trainer, settings)


async def test_a_request_for_an_undeclared_model_is_refused_at_once(
        settings: TrainingSettings) -> None:
    intake, bus = make_intake(settings), Bus()
    rejected = await request_handler(bus, intake)([delivery(request("r1", model="ghost"))])  # type: ignore[arg-type]
    assert [r.reason for r in rejected] == [
        "model 'ghost' is not declared in the project file; refused"]
    assert intake.queue.waiting() == [] and bus.published == []


async def test_requests_over_the_budget_are_refused_recorded_and_alerted(
        settings: TrainingSettings) -> None:
    intake, bus = make_intake(settings, budget=2), Bus()
    handle = request_handler(bus, intake)  # type: ignore[arg-type]
    rejected = await handle([delivery(request(f"r{i}"), offset=i) for i in range(5)])
    assert [r.delivery.envelope.ce_id for r in rejected] == ["r2", "r3", "r4"]
    assert all("retrain budget used: 2 of 2 per hour" in r.reason for r in rejected)
    alerts = bus.of(AlertRaised)
    assert [a.kind for a in alerts] == ["training_refused"] * 3
    assert [a.evidence["request_id"] for a in alerts] == ["r2", "r3", "r4"]
    assert [p.request.request_id for p in intake.queue.waiting()] == ["r0", "r1"]
    # A replay of an accepted request is neither refused nor counted again.
    assert await handle([delivery(request("r1"))]) == []
    assert intake.budget.used(MODEL) == 2


async def test_the_park_and_the_budget_survive_a_restart(settings: TrainingSettings) -> None:
    intake = make_intake(settings, budget=2)
    await request_handler(Bus(), intake)([delivery(request("r0")),  # type: ignore[arg-type]
                                          delivery(request("r1"))])
    restarted = make_intake(settings, budget=2)
    assert [p.request.request_id for p in restarted.queue.waiting()] == ["r0", "r1"]
    assert restarted.budget.used(MODEL) == 2
    rejected = await request_handler(Bus(), restarted)([delivery(request("r2"))])  # type: ignore[arg-type]
    assert len(rejected) == 1


def test_look_alike_request_ids_do_not_share_a_park(settings: TrainingSettings) -> None:
    intake = make_intake(settings)
    for request_id in ("a/b", "a_b"):
        intake.queue.put(park(request(request_id), "t", 0, 0, None, "0" * 32))
    assert sorted(p.request.request_id for p in intake.queue.waiting()) == ["a/b", "a_b"]


def test_the_budget_counts_the_last_hour_only(tmp_path: Path) -> None:
    now = [1_000_000.0]
    budget = RetrainBudget(tmp_path, clock=lambda: now[0])
    budget.record(MODEL, "a")
    now[0] += 1800
    budget.record(MODEL, "b")
    assert budget.used(MODEL) == 2
    now[0] += 1801
    assert budget.used(MODEL) == 1
    with (tmp_path / f"{safe_name(MODEL)}.jsonl").open("a") as ledger:
        ledger.write('{"request_id": "torn", "a')  # a crash mid-line
    assert RetrainBudget(tmp_path, clock=lambda: now[0]).used(MODEL) == 1


async def run_worker(bus: Bus, intake: Intake, until: Any) -> None:
    stopping = asyncio.Event()
    worker = asyncio.create_task(train_parked(bus, intake, stopping, poll_seconds=0.05))
    try:
        for _ in range(600):
            if until():
                break
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await worker
    assert until()


async def test_a_window_that_never_fills_does_not_hold_back_the_next_request(
        settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_champion(url: str, model: str) -> None:
        return None

    monkeypatch.setattr(consumers, "fetch_champion", no_champion)
    intake, bus = make_intake(settings, budget=5), Bus()
    await request_handler(bus, intake)([  # type: ignore[arg-type]
        delivery(request("never", min_records=10**9)), delivery(request("ready", min_records=50))])
    await run_worker(bus, intake, lambda: bus.of(ModelTrained))
    [trained] = bus.of(ModelTrained)
    assert trained.request_id == "ready"
    TRAINING_KEY.verifier().verify_run(trained)  # what training publishes is signed
    assert [p.request.request_id for p in intake.queue.waiting()] == ["never"]


async def test_a_request_that_waited_out_trains_on_what_is_there_or_is_dead_lettered(
        settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_champion(url: str, model: str) -> None:
        return None

    monkeypatch.setattr(consumers, "fetch_champion", no_champion)
    intake, bus = make_intake(settings, budget=5), Bus()
    await request_handler(bus, intake)([delivery(request("big", min_records=10**9))])  # type: ignore[arg-type]
    [parked] = intake.queue.waiting()
    intake.queue.put(parked.model_copy(update={"parked_at": parked.parked_at
                                               - timedelta(hours=2)}))
    await run_worker(bus, intake, lambda: bus.of(ModelTrained))
    assert intake.queue.waiting() == []

    intake.trainer.min_records = 10**6  # now nothing can be trained: refused, not retried
    await request_handler(bus, intake)([delivery(request("small", min_records=10**9), 7)])  # type: ignore[arg-type]
    [parked] = intake.queue.waiting()
    intake.queue.put(parked.model_copy(update={"parked_at": parked.parked_at
                                               - timedelta(hours=2)}))
    await run_worker(bus, intake, lambda: bus.of(RecordRejected))
    [letter] = bus.of(RecordRejected)
    assert (letter.offset, letter.rejected_by) == (7, "training")
    assert "at least 1000000 are needed" in letter.reason
    assert json.loads(letter.value_text or "")["request_id"] == "small"
    assert intake.queue.waiting() == []
