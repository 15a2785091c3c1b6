"""Serving's predict path on the outbox: "fast" answers before the broker acknowledged,
"acked" only after; a full outbox answers 503 with Retry-After (and nothing is answered);
a batch over the limit is refused naming it; a large body is predicted off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from river import tree
from river.datasets import synth

from contracts.events import PredictionMade
from contracts.http import ErrorDetail
from contracts.topics import Topic
from services.serving.handlers import Predictor
from services.serving.models import ModelManager
from services.serving.publishing import deliver_to, prediction_outbox
from services.serving.routes import build_router
from services.serving.settings import ServingSettings
from shared.artifacts import ArtifactStore
from shared.bus import Bus
from shared.http_errors import install_error_handlers
from shared.outbox import Outbox, OutboxFull
from shared.project import load_project
from tests.unit.factories import TRAINING_KEY
from tests.unit.test_outbox import TOPIC, FakeProducer

PROJECT_FILE = Path(__file__).resolve().parents[2] / "driftloop.toml"
MODEL = "loans-tree"
PREDICT = f"/v1/models/{MODEL}/predict"
INSTANCES = [x for x, _ in synth.Agrawal(seed=99).take(40)]


class ThreadRecorder(tree.HoeffdingTreeClassifier):
    """A tree that notes the thread each prediction ran in."""

    threads: set[int] = set()

    def predict_proba_one(self, x: dict[str, Any], **kwargs: Any) -> dict[Any, float]:
        ThreadRecorder.threads.add(threading.get_ident())
        return super().predict_proba_one(x, **kwargs)


@pytest.fixture
async def manager(tmp_path: Path) -> ModelManager:
    model = ThreadRecorder(grace_period=50)
    for x, y in synth.Agrawal(seed=1).take(300):
        model.learn_one(x, y)
    store = ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY)
    manager = ModelManager(store, declared=[MODEL])
    assert await manager.load(MODEL, 1, store.save_model(model))
    return manager


def settings(tmp_path: Path, **values: Any) -> ServingSettings:
    return ServingSettings(config=PROJECT_FILE, data_dir=tmp_path, **values)


async def serving(manager: ModelManager, config: ServingSettings,
                  producer: FakeProducer) -> tuple[FastAPI, Outbox]:
    outbox = prediction_outbox(config, Bus(config, "serving"))
    await outbox.start(producer, TOPIC)
    predictor = Predictor(load_project(PROJECT_FILE), manager, deliver_to(outbox, config),
                          config.max_batch_instances, config.inline_body_bytes)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router(predictor))
    return app, outbox


@pytest.fixture
async def client_factory() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(app: FastAPI) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://serving")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_fast_mode_answers_before_the_broker_acknowledges(
        tmp_path: Path, manager: ModelManager, client_factory: Any) -> None:
    producer = FakeProducer(ack="never")
    app, outbox = await serving(manager, settings(tmp_path), producer)
    response = await client_factory(app).post(PREDICT, json={"instances": INSTANCES[:32]})
    assert response.status_code == 200
    assert outbox.pending == 32
    await asyncio.sleep(0)
    events = [PredictionMade.model_validate_json(v) for _, _, v in producer.records()]
    answered = [item["prediction_id"] for item in response.json()["predictions"]]
    assert sorted(e.prediction_id for e in events) == sorted(answered)
    producer.ack_all()


async def test_acked_mode_answers_only_after_the_broker_acknowledged(
        tmp_path: Path, manager: ModelManager, client_factory: Any) -> None:
    producer = FakeProducer(ack="never")
    app, outbox = await serving(manager, settings(tmp_path, prediction_delivery="acked"),
                                producer)
    request = asyncio.create_task(client_factory(app).post(PREDICT,
                                                           json={"features": INSTANCES[0]}))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not request.done() and outbox.pending == 1
    producer.ack_all()
    response = await request
    assert response.status_code == 200 and outbox.pending == 0
    [(_, key, _)] = producer.records()
    assert key.decode() == response.json()["prediction_id"]


async def test_acked_mode_answers_503_when_the_broker_gives_up(
        tmp_path: Path, manager: ModelManager, client_factory: Any) -> None:
    app, _ = await serving(manager, settings(tmp_path, prediction_delivery="acked"),
                           FakeProducer(ack="error"))
    response = await client_factory(app).post(PREDICT, json={"features": INSTANCES[0]})
    assert response.status_code == 503
    assert ErrorDetail.model_validate(response.json()).error == "DependencyUnavailable"


async def test_a_full_outbox_answers_503_with_retry_after_and_publishes_nothing_more(
        tmp_path: Path, manager: ModelManager, client_factory: Any) -> None:
    producer = FakeProducer(ack="never")
    app, outbox = await serving(manager, settings(tmp_path, outbox_capacity=32,
                                                  outbox_wait_seconds=0.01), producer)
    client = client_factory(app)
    assert (await client.post(PREDICT, json={"instances": INSTANCES[:32]})).status_code == 200
    refused = await client.post(PREDICT, json={"features": INSTANCES[0]})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert ErrorDetail.model_validate(refused.json()).error == "OutboxFull"
    assert outbox.pending == 32
    producer.ack_all()
    await asyncio.sleep(0)
    assert (await client.post(PREDICT, json={"features": INSTANCES[0]})).status_code == 200


async def test_a_batch_over_the_limit_is_refused_naming_it(
        tmp_path: Path, manager: ModelManager, client_factory: Any) -> None:
    producer = FakeProducer()
    app, outbox = await serving(manager, settings(tmp_path, max_batch_instances=30), producer)
    response = await client_factory(app).post(PREDICT, json={"instances": INSTANCES[:31]})
    assert response.status_code == 422
    body = ErrorDetail.model_validate(response.json())
    assert "DRIFTLOOP_SERVING_MAX_BATCH_INSTANCES" in body.detail
    assert body.fields == [{"field": "instances", "message": "at most 30 per call"}]
    assert outbox.pending == 0 and producer.batches == []


async def test_a_large_body_is_predicted_off_the_event_loop(
        tmp_path: Path, manager: ModelManager, client_factory: Any) -> None:
    app, _ = await serving(manager, settings(tmp_path, inline_body_bytes=1024), FakeProducer())
    client = client_factory(app)
    loop_thread = threading.get_ident()
    ThreadRecorder.threads.clear()
    small = await client.post(PREDICT, json={"features": INSTANCES[0]})
    assert small.status_code == 200 and ThreadRecorder.threads == {loop_thread}
    ThreadRecorder.threads.clear()
    body = orjson.dumps({"instances": INSTANCES})
    assert len(body) > 1024
    large = await client.post(PREDICT, content=body,
                              headers={"content-type": "application/json"})
    assert large.status_code == 200 and len(large.json()["predictions"]) == len(INSTANCES)
    assert loop_thread not in ThreadRecorder.threads


async def test_outbox_alerts_go_to_the_alerts_topic_like_monitorings(tmp_path: Path) -> None:
    published: list[tuple[Any, ...]] = []

    class RecordingBus(Bus):
        async def publish(self, topic: Any, event: Any, key: str, ce_id: str | None = None,
                          trace_id: str | None = None) -> None:
            published.append((topic, event, key, ce_id))

    config = settings(tmp_path, outbox_capacity=1, outbox_wait_seconds=0)
    outbox = prediction_outbox(config, RecordingBus(config, "serving"))
    await outbox.start(FakeProducer(ack="never"), TOPIC)
    outbox.put(b"k", b"{}", [])
    with pytest.raises(OutboxFull):
        await outbox.wait_for_room(0)
    await asyncio.sleep(0)
    [(topic, alert, key, ce_id)] = published
    assert topic is Topic.ALERTS and key == alert.model
    assert alert.kind == "outbox_full" and ce_id == f"{alert.alert_id}/firing"
