"""The registry store on the real PostgreSQL server (127.0.0.1:5432, database `test`).

Each test works in a schema of its own, dropped afterwards. Set
DRIFTLOOP_TEST_POSTGRES_URL to use another server; when none answers the tests
are skipped with the reason (the SQLite path is covered by the unit tests).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from contracts.events import (
    ArtifactRef,
    DataWindow,
    Holdout,
    LifecycleAction,
    Lineage,
    ModelTrained,
)
from services.registry.handlers import Registry
from services.registry.schema import MIGRATIONS
from services.registry.store import RegistryStore
from shared.project import Project
from tests.unit.factories import REGISTRY_KEY, TRAINING_KEY

URL = os.environ.get("DRIFTLOOP_TEST_POSTGRES_URL",
                     "postgresql+psycopg2://postgres@127.0.0.1:5432/test")

PROJECT = Project.model_validate({
    "datasets": {"d": {"features": {"x": {"type": "float"}}, "label": {"type": "int"}}},
    "models": {"m": {"dataset": "d", "policy": {"promotion_margin": 0.01},
                     "pipeline": [{"estimator": "linear_model.LogisticRegression"}]}},
})


@pytest.fixture
def pg_url() -> Iterator[str]:
    engine = sa.create_engine(URL)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {URL}: {exc.orig}")
    schema = f"driftloop_test_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def _trained(run: str, accuracy: float, baseline: tuple[int, float] | None) -> ModelTrained:
    return TRAINING_KEY.sign_run(ModelTrained(
        run_id=run, model="m", request_id=f"req-{run}", metric="accuracy",
        metrics={"accuracy": accuracy},
        holdout=Holdout(snapshot_id="ab" * 32, start=80, size=20),
        baseline_version=baseline[0] if baseline else None,
        baseline_metrics={"accuracy": baseline[1]} if baseline else None,
        lineage=Lineage(dataset="d", snapshot_id="ab" * 32, records=100, window=DataWindow(),
                        pipeline=[{"estimator": "linear_model.LogisticRegression"}], seed=1,
                        code_version="test"),
        artifact=ArtifactRef(digest=uuid.uuid4().hex * 2, signature="00", size_bytes=1),
        duration_seconds=0.1))


def test_registry_runs_its_migrations_and_policy_on_postgres(pg_url: str) -> None:
    store = RegistryStore(pg_url)
    RegistryStore(pg_url).close()  # migrating twice is a no-op
    registry = Registry(PROJECT, store, REGISTRY_KEY, TRAINING_KEY.verifier())
    try:
        first = registry.record(_trained("r1", 0.80, None))
        assert first[0].action is LifecycleAction.PROMOTED and first[0].version == 1
        worse = registry.record(_trained("r2", 0.805, (1, 0.80)))
        assert worse[0].action is LifecycleAction.REJECTED  # below the 0.01 margin
        better = registry.record(_trained("r3", 0.90, (1, 0.80)))
        assert [(e.version, e.action) for e in better] == [
            (3, LifecycleAction.PROMOTED), (1, LifecycleAction.ARCHIVED)]
        assert registry.record(_trained("r3", 0.90, (1, 0.80)))[0].version == 3  # replay
        assert len(store.list_versions("m")) == 3
        back = registry.rollback("m", "incident", "alice")
        assert back[0].action is LifecycleAction.ROLLED_BACK and back[0].version == 1
        sequences = [e.sequence or 0 for e in first + worse + better + back]
        assert sequences == sorted(sequences)  # decision order from PostgreSQL's ids too
        REGISTRY_KEY.verifier().verify_decision(back[0])
        assert store.champion_version("m") == 1
        assert [e.action for e in store.audit_log("m")][-2:] == ["rolled_back", "archived"]
        # every decision's events are in the outbox, in order (4 decisions, 6 events)
        assert [r.key for r in store.pending_events()] == ["m"] * 6
        store.mark_sent(store.pending_events()[0].id)
        assert len(store.pending_events()) == 5
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT max(version) FROM schema_version")).scalar() == (
                len(MIGRATIONS))
    finally:
        store.close()
