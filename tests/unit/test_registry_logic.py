"""The registry's promotion policy and lifecycle, on a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from contracts.events import LifecycleAction, ModelLifecycleChanged, ModelTrained
from services.registry.handlers import Registry, judge
from services.registry.schema import MIGRATIONS
from services.registry.store import RegistryStore
from shared.errors import ModelNotFound, PromotionRefused, SignatureInvalid, UndeclaredModel
from shared.project import PolicySpec
from tests.unit.factories import (
    ATTACKER_KEY,
    REGISTRY_KEY,
    TRAINING_KEY,
    model_trained,
    project_with,
)

MODEL = "loans-tree"
MARGIN = 0.01


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RegistryStore]:
    opened = RegistryStore(f"sqlite:///{tmp_path}/r.db")
    yield opened
    opened.close()


@pytest.fixture
def registry(store: RegistryStore) -> Registry:
    return Registry(project_with(promotion_margin=MARGIN), store, REGISTRY_KEY,
                    TRAINING_KEY.verifier())


def summary(events: list[ModelLifecycleChanged]) -> list[tuple[int, str, int | None]]:
    return [(e.version, e.action.value, e.champion_version) for e in events]


def audit(store: RegistryStore) -> list[tuple[int, str]]:
    return [(e.version, e.action) for e in store.audit_log(MODEL)]


def with_champion_v1(registry: Registry) -> None:
    registry.record(model_trained("run-1", accuracy=0.80))


# -- judge ----------------------------------------------------------------------------------


def test_judge_first_version_is_promoted() -> None:
    action, reason = judge(model_trained("r", 0.1), None, PolicySpec())
    assert action is LifecycleAction.PROMOTED
    assert "first" in reason


@pytest.mark.parametrize(("new", "old", "expected"), [
    (0.75, 0.50, LifecycleAction.PROMOTED),   # better by exactly the margin
    (0.80, 0.50, LifecycleAction.PROMOTED),
    (0.70, 0.50, LifecycleAction.REJECTED),
    (0.40, 0.50, LifecycleAction.REJECTED),
])
def test_judge_higher_is_better(new: float, old: float, expected: LifecycleAction) -> None:
    candidate = model_trained("r", new, baseline_version=3, baseline_accuracy=old)
    action, _ = judge(candidate, 3, PolicySpec(promotion_margin=0.25))
    assert action is expected


@pytest.mark.parametrize(("new", "old", "expected"), [
    (1.0, 2.0, LifecycleAction.PROMOTED),
    (2.0, 1.0, LifecycleAction.REJECTED),
])
def test_judge_lower_is_better_for_errors(new: float, old: float,
                                          expected: LifecycleAction) -> None:
    candidate = model_trained("r", new, baseline_version=1, baseline_accuracy=old, metric="mae")
    action, _ = judge(candidate, 1, PolicySpec(metric="mae", promotion_margin=0.5))
    assert action is expected


@pytest.mark.parametrize(("baseline_version", "baseline_accuracy"), [
    (None, None), (1, None), (2, 0.5),
])
def test_judge_rejects_a_comparison_not_on_the_champion(baseline_version: int | None,
                                                        baseline_accuracy: float | None) -> None:
    candidate = model_trained("r", 0.99, baseline_version, baseline_accuracy)
    action, reason = judge(candidate, 3, PolicySpec())
    assert action is LifecycleAction.REJECTED
    assert "v3" in reason


# -- Registry.record ------------------------------------------------------------------------


def test_first_version_is_promoted(registry: Registry, store: RegistryStore) -> None:
    events = registry.record(model_trained("run-1", accuracy=0.80))
    assert summary(events) == [(1, "promoted", 1)]
    assert events[0].run_id == "run-1"
    assert events[0].metrics == {"accuracy": 0.80}
    assert store.champion_version(MODEL) == 1
    assert audit(store) == [(1, "promoted")]
    assert registry.champion(MODEL).version == 1


def test_candidate_beating_the_champion_is_promoted(registry: Registry,
                                                   store: RegistryStore) -> None:
    with_champion_v1(registry)
    events = registry.record(model_trained("run-2", 0.85, baseline_version=1,
                                           baseline_accuracy=0.80))
    assert summary(events) == [(2, "promoted", 2), (1, "archived", 2)]
    assert events[1].run_id == "run-1"
    assert store.champion_version(MODEL) == 2
    assert store.get(MODEL, 1).stage == "archived"
    assert store.get(MODEL, 2).stage == "champion"
    assert audit(store) == [(1, "promoted"), (2, "promoted"), (1, "archived")]


def test_candidate_not_beating_the_champion_by_the_margin_is_rejected(
        registry: Registry, store: RegistryStore) -> None:
    with_champion_v1(registry)
    events = registry.record(model_trained("run-2", 0.805, baseline_version=1,
                                           baseline_accuracy=0.80))
    assert summary(events) == [(2, "rejected", 1)]
    assert "not better by the margin" in events[0].reason
    assert store.champion_version(MODEL) == 1
    assert store.get(MODEL, 2).stage == "rejected"
    assert audit(store) == [(1, "promoted"), (2, "rejected")]


def test_candidate_scored_against_another_version_is_rejected(registry: Registry,
                                                              store: RegistryStore) -> None:
    with_champion_v1(registry)
    registry.record(model_trained("run-2", 0.90, baseline_version=1, baseline_accuracy=0.80))
    stale = model_trained("run-3", 0.99, baseline_version=1, baseline_accuracy=0.80)
    events = registry.record(stale)
    assert summary(events) == [(3, "rejected", 2)]
    assert "v2" in events[0].reason
    assert store.champion_version(MODEL) == 2


def test_replayed_run_gets_the_same_decision_and_no_new_version(registry: Registry,
                                                                store: RegistryStore) -> None:
    with_champion_v1(registry)
    promoted = model_trained("run-2", 0.90, baseline_version=1, baseline_accuracy=0.80)
    rejected = model_trained("run-3", 0.10, baseline_version=2, baseline_accuracy=0.90)
    first_promoted, first_rejected = registry.record(promoted), registry.record(rejected)
    audit_before = audit(store)

    again_promoted, again_rejected = registry.record(promoted), registry.record(rejected)
    assert summary(again_promoted)[0] == summary(first_promoted)[0] == (2, "promoted", 2)
    assert again_promoted[0].reason == first_promoted[0].reason
    assert summary(again_rejected) == summary(first_rejected) == [(3, "rejected", 2)]
    assert again_rejected[0].reason == first_rejected[0].reason
    assert [v.version for v in store.list_versions(MODEL)] == [1, 2, 3]
    assert audit(store) == audit_before


def test_a_run_stored_but_never_judged_is_judged_on_replay(registry: Registry,
                                                          store: RegistryStore) -> None:
    with_champion_v1(registry)
    worse = model_trained("run-2", 0.10, baseline_version=1, baseline_accuracy=0.80)
    store.add_version(worse)  # the process died before the decision was stored
    events = registry.record(worse)
    assert summary(events) == [(2, "rejected", 1)]
    assert "not better" in events[0].reason
    assert store.get(MODEL, 2).stage == "rejected"
    assert store.champion_version(MODEL) == 1


def test_a_tie_does_not_replace_the_champion() -> None:
    tie = model_trained("run-2", 0.80, baseline_version=1, baseline_accuracy=0.80)
    action, _ = judge(tie, 1, PolicySpec(promotion_margin=0.0))
    assert action is LifecycleAction.REJECTED


def test_unknown_model_is_refused(registry: Registry) -> None:
    with pytest.raises(UndeclaredModel):  # an InvalidInput: dead-lettered at once, not retried
        registry.record(model_trained("run-x", 0.9, model="ghost"))
    with pytest.raises(ModelNotFound):
        registry.rollback("ghost", "why", "alice")


# -- the chain of trust -----------------------------------------------------------------------


def forgeries() -> list[tuple[str, ModelTrained]]:
    genuine = model_trained("run-2", 0.81, baseline_version=1, baseline_accuracy=0.80)
    unsigned = genuine.model_copy(update={"signature": None})
    return [
        ("unsigned", unsigned.model_copy(update={"metrics": {"accuracy": 1.0}})),
        ("another key", ATTACKER_KEY.sign_run(unsigned.model_copy(
            update={"metrics": {"accuracy": 1.0}}))),
        ("tampered metrics", genuine.model_copy(update={"metrics": {"accuracy": 1.0}})),
        ("tampered baseline", genuine.model_copy(update={"baseline_metrics": {"accuracy": 0.0}})),
        ("tampered digest", genuine.model_copy(update={"artifact": genuine.artifact.model_copy(
            update={"digest": "ab" * 32})})),
        ("garbage signature", genuine.model_copy(update={"signature": "zz"})),
    ]


@pytest.mark.parametrize(("case", "forged"), forgeries(), ids=[c for c, _ in forgeries()])
def test_a_run_training_did_not_sign_is_refused_and_changes_nothing(
        registry: Registry, store: RegistryStore, case: str, forged: ModelTrained) -> None:
    with_champion_v1(registry)
    before = (store.list_versions(MODEL), audit(store))
    with pytest.raises(SignatureInvalid, match="training signature"):
        registry.record(forged)
    assert (store.list_versions(MODEL), audit(store)) == before
    assert store.champion_version(MODEL) == 1


def test_a_replayed_genuine_run_with_tampered_metrics_is_refused(registry: Registry) -> None:
    genuine = model_trained("run-1", 0.80)
    registry.record(genuine)
    with pytest.raises(SignatureInvalid):  # checked before the run id is looked up
        registry.record(genuine.model_copy(update={"metrics": {"accuracy": 1.0}}))


def test_every_decision_is_signed_by_the_registry_and_ordered(registry: Registry) -> None:
    events = registry.record(model_trained("run-1", 0.80))
    events += registry.record(model_trained("run-2", 0.90, baseline_version=1,
                                            baseline_accuracy=0.80))
    events += registry.rollback(MODEL, "bad", "alice")
    verifier = REGISTRY_KEY.verifier()
    for event in events:
        verifier.verify_decision(event)
        with pytest.raises(SignatureInvalid):
            TRAINING_KEY.verifier().verify_decision(event)  # not training's to sign
    assert [(e.version, e.action.value) for e in events] == [
        (1, "promoted"), (2, "promoted"), (1, "archived"), (1, "rolled_back"), (2, "archived")]
    sequences = [e.sequence for e in events]
    assert all(s is not None for s in sequences)
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    tampered = events[3].model_copy(update={"version": 2})
    with pytest.raises(SignatureInvalid):
        verifier.verify_decision(tampered)


def test_a_re_announced_decision_keeps_its_sequence(registry: Registry,
                                                    store: RegistryStore) -> None:
    first = registry.record(model_trained("run-1", 0.80))[0]
    again = registry.record(model_trained("run-1", 0.80))[0]
    assert again.sequence == first.sequence
    REGISTRY_KEY.verifier().verify_decision(again)
    assert store.get(MODEL, 1).decision_sequence == first.sequence


# -- manual promote and rollback ------------------------------------------------------------


def test_manual_promote(registry: Registry, store: RegistryStore) -> None:
    with_champion_v1(registry)
    registry.record(model_trained("run-2", 0.70, baseline_version=1, baseline_accuracy=0.80))
    events = registry.promote(MODEL, 2, "looks fine to me", "alice")
    assert summary(events) == [(2, "promoted", 2), (1, "archived", 2)]
    assert {e.actor for e in events} == {"alice"}
    assert store.champion_version(MODEL) == 2
    assert store.audit_log(MODEL)[-2].actor == "alice"
    with pytest.raises(PromotionRefused, match="already champion"):
        registry.promote(MODEL, 2, "again", "alice")


def test_rollback_restores_the_previous_champion(registry: Registry,
                                                 store: RegistryStore) -> None:
    with_champion_v1(registry)
    registry.record(model_trained("run-2", 0.90, baseline_version=1, baseline_accuracy=0.80))
    events = registry.rollback(MODEL, "v2 misbehaves in production", "alice")
    assert summary(events) == [(1, "rolled_back", 1), (2, "archived", 1)]
    assert store.champion_version(MODEL) == 1
    assert store.get(MODEL, 1).stage == "champion"
    assert store.get(MODEL, 2).stage == "archived"
    assert audit(store)[-2:] == [(1, "rolled_back"), (2, "archived")]


def test_repeated_rollbacks_walk_back_through_the_champions(registry: Registry,
                                                           store: RegistryStore) -> None:
    with_champion_v1(registry)
    registry.record(model_trained("run-2", 0.90, baseline_version=1, baseline_accuracy=0.80))
    registry.record(model_trained("run-3", 0.95, baseline_version=2, baseline_accuracy=0.90))
    assert store.champion_version(MODEL) == 3
    registry.rollback(MODEL, "v3 misbehaves", "alice")
    assert store.champion_version(MODEL) == 2
    registry.rollback(MODEL, "v2 too", "alice")
    assert store.champion_version(MODEL) == 1  # not back to v3
    with pytest.raises(PromotionRefused, match="no earlier champion"):
        registry.rollback(MODEL, "nothing left", "alice")


def test_rollback_skips_rejected_versions(registry: Registry, store: RegistryStore) -> None:
    with_champion_v1(registry)
    registry.record(model_trained("run-2", 0.90, baseline_version=1, baseline_accuracy=0.80))
    registry.record(model_trained("run-3", 0.10, baseline_version=2, baseline_accuracy=0.90))
    registry.rollback(MODEL, "why", "alice")
    assert store.champion_version(MODEL) == 1


def test_rollback_without_an_earlier_champion_is_refused(registry: Registry,
                                                        store: RegistryStore) -> None:
    with pytest.raises(PromotionRefused, match="no champion"):
        registry.rollback(MODEL, "why", "alice")
    with_champion_v1(registry)
    registry.record(model_trained("run-2", 0.10, baseline_version=1, baseline_accuracy=0.80))
    with pytest.raises(PromotionRefused, match="no earlier champion"):
        registry.rollback(MODEL, "why", "alice")
    assert store.champion_version(MODEL) == 1


# -- migrations -----------------------------------------------------------------------------


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    first = RegistryStore(url)
    Registry(project_with(), first, REGISTRY_KEY, TRAINING_KEY.verifier()).record(
        model_trained("run-1", 0.8))
    first.close()

    second = RegistryStore(url)
    try:
        with second.engine.connect() as conn:
            applied = conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all()
        assert applied == list(range(1, len(MIGRATIONS) + 1))
        assert second.champion_version(MODEL) == 1
        assert [v.run_id for v in second.list_versions(MODEL)] == ["run-1"]
    finally:
        second.close()
