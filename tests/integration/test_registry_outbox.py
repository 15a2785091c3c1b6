"""The registry's outbox on the real embedded broker: decisions taken while Kafka was not there
(not started yet, then hung) reach models.lifecycle once it is, each with the ce_id its outbox
row was given; a promotion answered during the outage is not lost. (The broker is hung with
SIGSTOP rather than restarted: the embedded broker keeps nothing across a restart.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from contracts.events import LifecycleAction, ModelLifecycleChanged
from contracts.topics import Topic
from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from services.registry.store import RegistryStore
from shared.broker import EmbeddedBroker, free_port
from shared.signing import ensure_dev_keys
from tests.unit.factories import PROJECT_FILE, model_trained, token_entry
from tests.unit.test_registry_routes import TOKEN, record

MODEL = "loans-tree"
BOUND = 120.0
"""Upper bound on waiting for the broker and the publisher (never reached when they work)."""


async def drained(store: RegistryStore) -> None:
    """Wait until the outbox has nothing pending."""
    deadline = time.monotonic() + BOUND
    while store.pending_events():
        assert time.monotonic() < deadline, "the outbox never drained"
        await asyncio.sleep(0.2)


async def lifecycle(bootstrap: str, count: int) -> list[tuple[str, ModelLifecycleChanged]]:
    """The first `count` events on models.lifecycle, with their ce_id."""
    consumer = AIOKafkaConsumer(Topic.MODELS_LIFECYCLE.value, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                metadata_max_age_ms=500)
    await consumer.start()
    found: list[tuple[str, ModelLifecycleChanged]] = []
    try:
        deadline = time.monotonic() + BOUND
        while len(found) < count:
            assert time.monotonic() < deadline, f"only {len(found)} of {count} events arrived"
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    ce_id = dict(message.headers)["ce_id"].decode()
                    found.append((ce_id, ModelLifecycleChanged.model_validate_json(message.value)))
    finally:
        await consumer.stop()
    return found


async def promote_while_hung(app: FastAPI, broker: EmbeddedBroker,
                             store: RegistryStore) -> list[str]:
    """Promote v2 over HTTP while the broker answers nothing; the ce_ids left pending."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://registry",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            answer = await client.post(f"/v1/models/{MODEL}/promote",
                                       json={"version": 2, "reason": "during the outage"})
        assert answer.status_code == 200, answer.text  # the decision does not wait for Kafka
        pending = [row.ce_id for row in store.pending_events()]
        assert len(pending) == 2  # promoted v2, archived v1
        return pending
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


async def test_decisions_taken_without_kafka_are_published_when_it_is_back(
        tmp_path: Path) -> None:
    port = free_port()
    keys = ensure_dev_keys(tmp_path)  # a real cluster's settings: every key given
    settings = RegistrySettings(config=PROJECT_FILE, data_dir=tmp_path,
                                kafka_bootstrap=f"127.0.0.1:{port}",
                                registry_signing_key_file=keys["registry"].private,
                                training_public_key_file=keys["training"].public,
                                auth_tokens=[token_entry(TOKEN)])
    # v1 promoted, v2 rejected by the policy, before any broker exists.
    record(settings, model_trained("run-1", 0.80),
           model_trained("run-2", 0.70, baseline_version=1, baseline_accuracy=0.80))
    store = RegistryStore(settings.resolved_database_url())
    first = [row.ce_id for row in store.pending_events()]
    broker = EmbeddedBroker("127.0.0.1", port, tmp_path / "broker.log")
    await asyncio.to_thread(broker.start)  # it runs an event loop of its own to wait
    try:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await drained(store)  # sent by the publisher at start
            published = await lifecycle(broker.bootstrap, 2)
            assert [ce_id for ce_id, _ in published] == first
            assert [(e.version, e.action) for _, e in published] == [
                (1, LifecycleAction.PROMOTED), (2, LifecycleAction.REJECTED)]

            pending = await promote_while_hung(app, broker, store)
            await drained(store)
            after = (await lifecycle(broker.bootstrap, 4))[2:]
            assert [ce_id for ce_id, _ in after] == pending
            assert [(e.version, e.action, e.reason) for _, e in after] == [
                (2, LifecycleAction.PROMOTED, "during the outage"),
                (1, LifecycleAction.ARCHIVED, "replaced by v2")]
    finally:
        await asyncio.to_thread(broker.stop)
        store.close()
