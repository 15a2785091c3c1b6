"""Serving and monitoring act on a lifecycle decision only if the registry signed it, about a
declared model, and it is not older than one they applied; anything else is rejected (so
the consumer edge dead-letters it) and changes nothing."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from river import tree

from contracts.events import ArtifactRef, LifecycleAction, ModelLifecycleChanged
from contracts.topics import Topic
from services.monitoring.consumers import monitor_handler
from services.monitoring.handlers import Monitor
from services.serving.consumers import lifecycle_handler
from services.serving.models import ModelManager
from shared.artifacts import ArtifactStore
from shared.consumer import Delivery, per_event
from shared.envelope import Envelope
from shared.errors import StaleDecision, UndeclaredModel
from tests.unit.factories import ATTACKER_KEY, REGISTRY_KEY, TRAINING_KEY, demo_project

MODEL = "loans-tree"


_offsets = itertools.count()


def delivery(event: ModelLifecycleChanged, ce_id: str = "x") -> Delivery:
    value = event.model_dump_json().encode()
    record = ConsumerRecord(Topic.MODELS_LIFECYCLE.value, 0, next(_offsets), 0, 0, None, value,
                            None, 0, len(value), ())
    return Delivery(Topic.MODELS_LIFECYCLE, event, Envelope(ce_id, "", "test", "", "0" * 32),
                    record)


def decision(ref: ArtifactRef, version: int, sequence: int, model: str = MODEL,
             action: LifecycleAction = LifecycleAction.PROMOTED) -> ModelLifecycleChanged:
    return ModelLifecycleChanged(model=model, version=version, action=action, reason="t",
                                 run_id=f"run-{version}", artifact=ref, champion_version=version,
                                 metrics={"accuracy": 0.9}, sequence=sequence)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY)


@pytest.fixture
def refs(store: ArtifactStore) -> list[ArtifactRef]:
    return [store.save_model(tree.HoeffdingTreeClassifier(grace_period=g)) for g in (10, 20, 30)]


@pytest.fixture
def manager(tmp_path: Path) -> ModelManager:
    verifying = ArtifactStore(tmp_path / "artifacts", verifier=TRAINING_KEY.verifier())
    return ModelManager(verifying, declared=demo_project().models)


async def serve(manager: ModelManager, *events: ModelLifecycleChanged) -> list[str]:
    """Feed events as the serving consumer does; the reasons of those it rejects."""
    handle = per_event(lifecycle_handler(manager, REGISTRY_KEY.verifier()))
    rejected = await handle([delivery(e, f"e{i}") for i, e in enumerate(events)])
    return [r.reason for r in rejected]


def served(manager: ModelManager) -> list[tuple[str, int]]:
    return [(m.name, m.version) for m in manager.loaded()]


async def test_a_signed_decision_is_applied(manager: ModelManager,
                                            refs: list[ArtifactRef]) -> None:
    assert await serve(manager, REGISTRY_KEY.sign_decision(decision(refs[0], 1, 1))) == []
    assert served(manager) == [(MODEL, 1)]


@pytest.mark.parametrize("case", ["unsigned", "another key", "tampered version",
                                  "tampered digest"])
async def test_forged_or_tampered_decisions_are_rejected_and_change_nothing(
        manager: ModelManager, refs: list[ArtifactRef], case: str) -> None:
    await serve(manager, REGISTRY_KEY.sign_decision(decision(refs[0], 1, 1)))
    genuine = REGISTRY_KEY.sign_decision(decision(refs[1], 2, 2))
    forged = {
        "unsigned": decision(refs[1], 77, 9),
        "another key": ATTACKER_KEY.sign_decision(decision(refs[1], 77, 9)),
        "tampered version": genuine.model_copy(update={"version": 77, "champion_version": 77}),
        "tampered digest": genuine.model_copy(update={"artifact": refs[2]}),
    }[case]
    [reason] = await serve(manager, forged)
    assert "registry signature" in reason
    assert served(manager) == [(MODEL, 1)]


async def test_undeclared_models_are_refused_even_if_signed(manager: ModelManager,
                                                           refs: list[ArtifactRef]) -> None:
    reasons = await serve(manager, *[REGISTRY_KEY.sign_decision(decision(refs[0], 1, 1, f"m{i}"))
                                     for i in range(5)])
    assert len(reasons) == 5 and all("not declared" in r for r in reasons)
    assert served(manager) == []
    with pytest.raises(UndeclaredModel):
        await manager.load("ghost", 1, refs[0])


async def test_a_replayed_older_decision_never_rolls_serving_back(
        manager: ModelManager, refs: list[ArtifactRef]) -> None:
    v1 = REGISTRY_KEY.sign_decision(decision(refs[0], 1, 1))
    v2 = REGISTRY_KEY.sign_decision(decision(refs[1], 2, 4))
    assert await serve(manager, v1, v2) == []
    [reason] = await serve(manager, v1)  # genuine, signed, and old
    assert "older than decision #4" in reason
    assert await serve(manager, v2) == []  # the same decision again: a no-op, not an error
    assert served(manager) == [(MODEL, 2)]
    rollback = REGISTRY_KEY.sign_decision(decision(refs[0], 1, 6,
                                                   action=LifecycleAction.ROLLED_BACK))
    assert await serve(manager, rollback) == []  # a newer decision may go back to v1
    assert served(manager) == [(MODEL, 1)]


async def test_a_champion_from_the_registry_api_sets_the_bar_for_replays(
        manager: ModelManager, refs: list[ArtifactRef]) -> None:
    # After a restart serving learns v2 (decision #4) from the registry, not from the topic.
    assert await manager.load(MODEL, 2, refs[1], unless_swapped_since=0, sequence=4)
    with pytest.raises(StaleDecision):
        await manager.load(MODEL, 1, refs[0], sequence=1)
    [reason] = await serve(manager, REGISTRY_KEY.sign_decision(decision(refs[0], 1, 1)))
    assert "a replay" in reason
    assert served(manager) == [(MODEL, 2)]


async def test_an_artifact_training_did_not_sign_is_never_unpickled(
        manager: ModelManager, tmp_path: Path) -> None:
    hostile = ArtifactStore(tmp_path / "artifacts", signer=ATTACKER_KEY).put(b"cos\nsystem\n")
    # Even a genuine registry decision cannot make serving load it.
    assert await serve(manager, REGISTRY_KEY.sign_decision(decision(hostile, 1, 1))) == []
    assert served(manager) == []


# -- monitoring ---------------------------------------------------------------------------------


class Bus:
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish(self, topic: Topic, event: Any, key: str, ce_id: str | None = None,
                      trace_id: str | None = None) -> None:
        self.published.append(event)


async def test_monitoring_rejects_forged_decisions_and_ignores_older_ones(
        refs: list[ArtifactRef]) -> None:
    monitor = Monitor(demo_project())
    handle = monitor_handler(Bus(), monitor, REGISTRY_KEY.verifier())  # type: ignore[arg-type]
    v2 = REGISTRY_KEY.sign_decision(decision(refs[1], 2, 4))
    assert await handle([delivery(v2, "a")]) == []
    assert monitor.watches[MODEL].concept.version == 2

    forged = [decision(refs[0], 77, 99), ATTACKER_KEY.sign_decision(decision(refs[0], 77, 99)),
              v2.model_copy(update={"version": 77, "champion_version": 77}),
              REGISTRY_KEY.sign_decision(decision(refs[0], 1, 5, model="ghost"))]
    batch = [delivery(event, f"f{i}") for i, event in enumerate(forged)]
    rejected = await handle(batch)
    assert [r.delivery.envelope.ce_id for r in rejected] == ["f0", "f1", "f2", "f3"]
    assert "not declared" in rejected[3].reason
    assert await handle(batch) == rejected  # a retried batch is rejected again, not fed twice
    assert await handle([delivery(REGISTRY_KEY.sign_decision(decision(refs[0], 1, 1)), "old")]) \
        == []  # genuine but older: ignored (monitoring re-reads history on every start)
    assert monitor.watches[MODEL].concept.version == 2
    assert set(monitor.watches) == {MODEL}
