"""A registry decision and its lifecycle events are one unit (issue 5, finding 9): the events are
written to an outbox in the decision's own transaction and published from there, with the
broker's acknowledgement, even when the broker was down at decision time or the registry died
between the commit and the publish."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.events import LifecycleAction, ModelLifecycleChanged
from contracts.topics import Topic
from services.registry.app import create_app
from services.registry.consumers import trained_handler
from services.registry.handlers import Registry
from services.registry.outbox import OutboxPublisher
from services.registry.settings import RegistrySettings
from services.registry.store import RegistryStore
from shared.consumer import Delivery
from shared.envelope import Envelope
from shared.errors import DependencyUnavailable
from tests.unit.factories import (
    PROJECT_FILE,
    REGISTRY_KEY,
    TRAINING_KEY,
    demo_project,
    model_trained,
    token_entry,
)
from tests.unit.test_registry_routes import TOKEN

MODEL = "loans-tree"
BOUND = 10.0
"""Upper bound on waiting for the publisher (never reached when it works)."""


class FlakyBroker:
    """Takes publishes like the bus (publish_raw); the first `failures` raise as a broker that
    is down does. Records every attempt's ce_id and what was acknowledged."""

    source = "registry"

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts: list[str] = []
        self.acked: list[tuple[Topic, bytes, bytes | None, str]] = []
        self.changed = asyncio.Event()

    async def publish_raw(self, topic: Topic, value: bytes, key: bytes | None,
                          headers: list[tuple[str, bytes]]) -> None:
        ce_id = dict(headers)["ce_id"].decode()
        self.attempts.append(ce_id)
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailable(dependency="kafka", detail="broker down")
        self.acked.append((topic, value, key, ce_id))
        self.changed.set()

    async def until(self, count: int) -> None:
        while len(self.acked) < count:
            self.changed.clear()
            await self.changed.wait()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


def registry_on(url: str) -> Registry:
    return Registry(demo_project(), RegistryStore(url), REGISTRY_KEY, TRAINING_KEY.verifier())


def two_versions(registry: Registry) -> list[ModelLifecycleChanged]:
    """v1 promoted (first), v2 rejected (worse): three events in all."""
    events = registry.record(model_trained("run-1", 0.80))
    events += registry.record(model_trained("run-2", 0.70, baseline_version=1,
                                            baseline_accuracy=0.80))
    return events


def decoded(broker: FlakyBroker) -> list[ModelLifecycleChanged]:
    return [ModelLifecycleChanged.model_validate_json(value) for _, value, _, _ in broker.acked]


async def run_until(publisher: OutboxPublisher, broker: FlakyBroker, count: int) -> None:
    """Run the publisher until `count` events were acknowledged, then stop it."""
    stopping = asyncio.Event()
    task = asyncio.create_task(publisher.run(stopping))
    try:
        await asyncio.wait_for(broker.until(count), BOUND)
    finally:
        stopping.set()
        await asyncio.wait_for(task, BOUND)


# -- one transaction --------------------------------------------------------------------------


def test_a_decision_is_stored_with_its_events(url: str) -> None:
    registry = registry_on(url)
    events = two_versions(registry)
    events += registry.promote(MODEL, 2, "manual", "alice")
    pending = registry.store.pending_events()
    assert [ModelLifecycleChanged.model_validate_json(row.payload) for row in pending] == events
    assert [e.action for e in events] == [LifecycleAction.PROMOTED, LifecycleAction.REJECTED,
                                          LifecycleAction.PROMOTED, LifecycleAction.ARCHIVED]
    assert {row.topic for row in pending} == {Topic.MODELS_LIFECYCLE}
    assert len({row.ce_id for row in pending}) == len(pending)


def test_a_decision_whose_events_cannot_be_written_is_not_stored(url: str) -> None:
    registry = registry_on(url)
    two_versions(registry)
    audit_before = registry.store.audit_log(MODEL)

    def broken(decided: Any, lookup: Any) -> list[ModelLifecycleChanged]:
        raise RuntimeError("outbox write failed")

    with pytest.raises(RuntimeError):
        registry.store.decide(MODEL, 2, "promoted", "manual", "alice", new_champion=2,
                              stage="champion", announce=broken)
    assert registry.store.audit_log(MODEL) == audit_before
    assert registry.store.champion_version(MODEL) == 1
    assert len(registry.store.pending_events()) == 2


# -- publishing -------------------------------------------------------------------------------


async def test_events_go_out_once_the_broker_is_back(url: str) -> None:
    registry = registry_on(url)
    events = two_versions(registry)  # decided while no broker was reachable
    broker = FlakyBroker(failures=3)
    publisher = OutboxPublisher(registry.store, broker, poll=0.05, max_backoff=0.05)
    await run_until(publisher, broker, len(events))
    assert decoded(broker) == events
    assert registry.store.pending_events() == []
    first_try = broker.attempts[0]
    assert broker.attempts[:4] == [first_try] * 4  # the same row, the same ce_id, each retry
    assert broker.acked[0][3] == first_try and broker.acked[0][2] == MODEL.encode()


async def test_a_crash_between_commit_and_publish_publishes_at_start(url: str) -> None:
    two_versions(registry_on(url))  # committed, then the process died before publishing
    restarted = registry_on(url)
    broker = FlakyBroker()
    await run_until(OutboxPublisher(restarted.store, broker, poll=60.0), broker, 2)
    assert [e.action for e in decoded(broker)] == [LifecycleAction.PROMOTED,
                                                   LifecycleAction.REJECTED]


async def test_a_crash_after_the_ack_resends_with_the_same_ce_id(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_on(url)
    two_versions(registry)
    broker = FlakyBroker()

    def killed(row_id: int) -> None:
        raise RuntimeError("killed before marking the row sent")

    monkeypatch.setattr(registry.store, "mark_sent", killed)
    with pytest.raises(RuntimeError):
        await OutboxPublisher(registry.store, broker).flush()
    [(_, _, _, first_id)] = broker.acked

    restarted = registry_on(url)
    again = FlakyBroker()
    await run_until(OutboxPublisher(restarted.store, again, poll=60.0), again, 2)
    assert again.acked[0][3] == first_id  # consumers de-duplicate the re-send by it
    assert restarted.store.pending_events() == []


async def test_a_stopping_publisher_tries_once_more_then_leaves_the_rest_pending(
        url: str) -> None:
    registry = registry_on(url)
    two_versions(registry)
    broker = FlakyBroker(failures=1000)
    stopping = asyncio.Event()
    stopping.set()
    await asyncio.wait_for(OutboxPublisher(registry.store, broker).run(stopping), BOUND)
    assert broker.attempts and not broker.acked
    assert len(registry.store.pending_events()) == 2


# -- the edges write to the outbox and wake the publisher -------------------------------------


async def test_the_models_trained_consumer_wakes_the_publisher(url: str) -> None:
    registry = registry_on(url)
    woken: list[bool] = []
    handle = trained_handler(registry, lambda: woken.append(True))
    delivery = Delivery(Topic.MODELS_TRAINED, model_trained("run-1", 0.80),
                        Envelope("e1", "", "test", "", "0" * 32), None)  # type: ignore[arg-type]
    await handle([delivery])
    assert woken and len(registry.store.pending_events()) == 1


async def test_a_promotion_over_http_is_in_the_outbox_when_it_answers(tmp_path: Path) -> None:
    settings = RegistrySettings(config=PROJECT_FILE, data_dir=tmp_path, auth_tokens=[
        token_entry(TOKEN)])
    two_versions(registry_on(settings.resolved_database_url()))
    app = create_app(settings)  # no lifespan: no Kafka, the publisher is not running
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://registry",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = await client.post(f"/v1/models/{MODEL}/promote",
                                     json={"version": 2, "reason": "manual"})
    assert response.status_code == 200
    pending = RegistryStore(settings.resolved_database_url()).pending_events()
    actions = [ModelLifecycleChanged.model_validate_json(r.payload).action for r in pending]
    assert actions[-2:] == [LifecycleAction.PROMOTED, LifecycleAction.ARCHIVED]
