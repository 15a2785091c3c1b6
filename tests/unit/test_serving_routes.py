"""Serving over HTTP: the inference API against a model loaded from a signed artifact, the
error bodies, and the model manager's refusal of artifacts that do not verify."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from river import tree
from river.datasets import synth

from contracts.events import ArtifactRef, PredictionMade
from contracts.http import BatchPredictResponse, ErrorDetail, PredictResponse
from services.serving.app import create_app
from services.serving.handlers import Predictor
from services.serving.models import ModelManager
from services.serving.routes import build_router
from services.serving.settings import ServingSettings
from shared.artifacts import ArtifactStore
from shared.http_errors import install_error_handlers
from shared.project import Project, load_project
from tests.unit.factories import ATTACKER_KEY, TRAINING_KEY

PROJECT_FILE = Path(__file__).resolve().parents[2] / "driftloop.toml"
MODEL = "loans-tree"
PREDICT = f"/v1/models/{MODEL}/predict"


def agrawal(n: int, seed: int) -> list[tuple[dict[str, Any], int]]:
    return list(synth.Agrawal(seed=seed).take(n))


def train(n: int = 300, seed: int = 1) -> tree.HoeffdingTreeClassifier:
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in agrawal(n, seed):
        model.learn_one(x, y)
    return model


# Instances to predict: seeded rows of the same stream, all inside the dataset contract.
INSTANCES = [x for x, _ in agrawal(8, seed=99)]


def client_for(app: FastAPI) -> httpx.AsyncClient:
    # ASGITransport does not run the lifespan, so no Kafka is needed.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serving")


def fields_of(response: httpx.Response) -> list[str]:
    return [f["field"] for f in ErrorDetail.model_validate(response.json()).fields]


@pytest.fixture
def project() -> Project:
    return load_project(PROJECT_FILE)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY)


@pytest.fixture
def model_v1() -> tree.HoeffdingTreeClassifier:
    return train()


@pytest.fixture
async def manager(store: ArtifactStore, model_v1: tree.HoeffdingTreeClassifier) -> ModelManager:
    manager = ModelManager(store, declared=[MODEL])
    assert await manager.load(MODEL, 1, store.save_model(model_v1))
    return manager


@pytest.fixture
def emitted() -> list[PredictionMade]:
    return []


def inference_app(project: Project, manager: ModelManager,
                  emitted: list[PredictionMade]) -> FastAPI:
    async def deliver(events: list[tuple[str, bytes]]) -> None:
        # The encoded events must be valid PredictionMade contracts.
        emitted.extend(PredictionMade.model_validate_json(value) for _, value in events)

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router(Predictor(project, manager, deliver)))
    return app


@pytest.fixture
async def client(project: Project, manager: ModelManager,
                 emitted: list[PredictionMade]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(inference_app(project, manager, emitted)) as client:
        yield client


def expected(model: tree.HoeffdingTreeClassifier, features: dict[str, Any]) -> tuple[Any, dict]:
    proba = model.predict_proba_one(features)
    return max(proba, key=proba.get), {str(k): v for k, v in proba.items()}


# -- the service app as built by create_app (no lifespan) ---------------------------------------


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ServingSettings(config=PROJECT_FILE, data_dir=tmp_path))
    async with client_for(app) as client:
        yield client


async def test_service_app_answers_health_and_lists_nothing_served(
        service: httpx.AsyncClient) -> None:
    health = await service.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "service": "serving"}
    assert len(health.headers["x-trace-id"]) == 32
    served = await service.get("/v1/models")
    assert served.status_code == 200 and served.json() == []


async def test_service_app_is_not_ready_without_its_lifespan(service: httpx.AsyncClient) -> None:
    response = await service.get("/readyz")
    assert response.status_code == 503 and response.json()["ready"] is False


async def test_service_app_answers_409_before_a_champion_is_loaded(
        service: httpx.AsyncClient) -> None:
    response = await service.post(PREDICT, json={"features": INSTANCES[0]})
    assert response.status_code == 409
    body = ErrorDetail.model_validate(response.json())
    assert body.error == "ModelNotReady" and MODEL in body.detail


async def test_service_app_answers_404_for_an_undeclared_model(
        service: httpx.AsyncClient) -> None:
    response = await service.post("/v1/models/nope/predict", json={"features": INSTANCES[0]})
    assert response.status_code == 404
    assert response.json()["error"] == "ModelNotFound"


async def test_service_app_echoes_the_callers_trace(service: httpx.AsyncClient) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await service.get("/healthz",
                                 headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert response.headers["x-trace-id"] == trace


# -- predictions ----------------------------------------------------------------------------


async def test_single_prediction(client: httpx.AsyncClient, emitted: list[PredictionMade],
                                 model_v1: tree.HoeffdingTreeClassifier) -> None:
    features = INSTANCES[0]
    response = await client.post(PREDICT, json={"features": features})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model", "version", "prediction", "probabilities", "prediction_id"}
    answer = PredictResponse.model_validate(body)
    assert (answer.model, answer.version) == (MODEL, 1)
    prediction, probabilities = expected(model_v1, features)
    assert answer.prediction == prediction
    assert answer.probabilities == pytest.approx(probabilities)
    assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    assert len(emitted) == 1
    event = emitted[0]
    assert event.prediction_id == answer.prediction_id
    assert (event.model, event.version, event.prediction) == (MODEL, 1, prediction)
    assert event.features == features
    assert event.latency_seconds >= 0


async def test_features_are_normalised_to_declared_types(client: httpx.AsyncClient,
                                                         emitted: list[PredictionMade]) -> None:
    features = {**INSTANCES[0], "age": 41.0, "salary": 50_000}
    response = await client.post(PREDICT, json={"features": features})
    assert response.status_code == 200, response.text
    assert type(emitted[0].features["age"]) is int
    assert type(emitted[0].features["salary"]) is float


async def test_each_prediction_gets_its_own_id_and_event(client: httpx.AsyncClient,
                                                         emitted: list[PredictionMade]) -> None:
    ids = [(await client.post(PREDICT, json={"features": x})).json()["prediction_id"]
           for x in INSTANCES[:3]]
    assert len(set(ids)) == 3
    assert [e.prediction_id for e in emitted] == ids


async def test_batch_prediction_answers_in_order_with_one_version(
        client: httpx.AsyncClient, emitted: list[PredictionMade],
        model_v1: tree.HoeffdingTreeClassifier) -> None:
    response = await client.post(PREDICT, json={"instances": INSTANCES})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"model", "version", "predictions"}
    answer = BatchPredictResponse.model_validate(response.json())
    assert (answer.model, answer.version) == (MODEL, 1)
    assert len(answer.predictions) == len(INSTANCES)
    for item, features in zip(answer.predictions, INSTANCES, strict=True):
        prediction, probabilities = expected(model_v1, features)
        assert item.prediction == prediction
        assert item.probabilities == pytest.approx(probabilities)
    assert [e.prediction_id for e in emitted] == [i.prediction_id for i in answer.predictions]
    assert [e.features for e in emitted] == INSTANCES
    assert {e.version for e in emitted} == {1}


async def test_served_models_are_listed(client: httpx.AsyncClient, store: ArtifactStore,
                                        model_v1: tree.HoeffdingTreeClassifier) -> None:
    [served] = (await client.get("/v1/models")).json()
    assert (served["model"], served["version"]) == (MODEL, 1)
    assert served["digest"] == store.save_model(model_v1).digest


# -- refused requests -------------------------------------------------------------------------


async def test_missing_feature_is_422_naming_it(client: httpx.AsyncClient,
                                                emitted: list[PredictionMade]) -> None:
    features = {k: v for k, v in INSTANCES[0].items() if k != "age"}
    response = await client.post(PREDICT, json={"features": features})
    assert response.status_code == 422
    body = ErrorDetail.model_validate(response.json())
    assert body.error == "InvalidFeatures"
    assert body.fields == [{"field": "features.age", "message": "field required"}]
    assert "features.age" in body.detail
    assert emitted == []


async def test_mistyped_feature_is_422_naming_it(client: httpx.AsyncClient,
                                                 emitted: list[PredictionMade]) -> None:
    response = await client.post(PREDICT, json={"features": {**INSTANCES[0], "age": "forty"}})
    assert response.status_code == 422
    [problem] = ErrorDetail.model_validate(response.json()).fields
    assert problem["field"] == "features.age"
    assert "forty" in problem["message"]
    assert emitted == []


async def test_out_of_range_and_undeclared_features_are_named(client: httpx.AsyncClient) -> None:
    features = {**INSTANCES[0], "age": 300, "colour": "red"}
    response = await client.post(PREDICT, json={"features": features})
    assert response.status_code == 422
    assert sorted(fields_of(response)) == ["features.age", "features.colour"]


async def test_bad_instance_in_a_batch_fails_the_call_naming_its_index(
        client: httpx.AsyncClient, emitted: list[PredictionMade]) -> None:
    instances = [INSTANCES[0], {**INSTANCES[1], "age": "forty"}, INSTANCES[2]]
    response = await client.post(PREDICT, json={"instances": instances})
    assert response.status_code == 422
    assert fields_of(response) == ["instances.1.age"]
    assert emitted == []


async def test_malformed_json_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(PREDICT, content=b'{"features": {"age": ',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422
    body = ErrorDetail.model_validate(response.json())
    assert body.fields == [{"field": "body", "message": "not valid JSON"}]


@pytest.mark.parametrize(("payload", "field"), [
    ({}, "features"),
    ({"features": INSTANCES[0], "extra": 1}, "extra"),
    ({"instances": []}, "instances"),
    ({"features": [1, 2]}, "features"),
])
async def test_body_of_the_wrong_shape_is_422_naming_the_field(
        client: httpx.AsyncClient, payload: dict[str, Any], field: str) -> None:
    response = await client.post(PREDICT, json=payload)
    assert response.status_code == 422
    assert field in fields_of(response)


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/nope/predict", json={"features": INSTANCES[0]})
    assert response.status_code == 404
    body = ErrorDetail.model_validate(response.json())
    assert body.error == "ModelNotFound" and "nope" in body.detail


async def test_declared_model_with_nothing_loaded_is_409(project: Project, store: ArtifactStore,
                                                         emitted: list[PredictionMade]) -> None:
    manager = ModelManager(store, project.models)
    async with client_for(inference_app(project, manager, emitted)) as client:
        response = await client.post(PREDICT, json={"features": INSTANCES[0]})
    assert response.status_code == 409
    assert response.json()["error"] == "ModelNotReady"
    assert emitted == []


# -- artifact integrity and the swap ----------------------------------------------------------


@pytest.fixture
def ref_v2(store: ArtifactStore) -> ArtifactRef:
    return store.save_model(train(600, seed=2))


async def test_corrupted_artifact_is_refused_and_v1_keeps_serving(
        manager: ModelManager, store: ArtifactStore, ref_v2: ArtifactRef) -> None:
    v1_digest = manager.get(MODEL).digest
    path = store.path(ref_v2.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert await manager.load(MODEL, 2, ref_v2) is False
    served = manager.get(MODEL)
    assert (served.version, served.digest) == (1, v1_digest)


async def test_wrongly_signed_artifact_is_refused_and_v1_keeps_serving(
        manager: ModelManager, store: ArtifactStore, ref_v2: ArtifactRef) -> None:
    forged = ref_v2.model_copy(update={"signature": ATTACKER_KEY.sign_artifact(ref_v2.digest)})
    assert await manager.load(MODEL, 2, forged) is False
    assert manager.get(MODEL).version == 1


async def test_missing_artifact_file_is_refused_and_v1_keeps_serving(
        manager: ModelManager, store: ArtifactStore, ref_v2: ArtifactRef) -> None:
    store.path(ref_v2.digest).unlink()
    assert await manager.load(MODEL, 2, ref_v2) is False
    assert manager.get(MODEL).version == 1


async def test_the_same_bytes_under_a_new_version_report_the_new_version(
        manager: ModelManager, store: ArtifactStore) -> None:
    same = manager.get(MODEL)
    ref = ArtifactRef(digest=same.digest, signature=TRAINING_KEY.sign_artifact(same.digest),
                      size_bytes=1)
    assert await manager.load(MODEL, 3, ref) is True
    assert manager.get(MODEL).version == 3
    forged = ref.model_copy(update={"signature": "00" * 32})
    assert await manager.load(MODEL, 4, forged) is False
    assert manager.get(MODEL).version == 3


async def test_verified_v2_replaces_v1(manager: ModelManager, ref_v2: ArtifactRef,
                                       client: httpx.AsyncClient) -> None:
    assert await manager.load(MODEL, 2, ref_v2) is True
    served = manager.get(MODEL)
    assert (served.version, served.digest) == (2, ref_v2.digest)
    response = await client.post(PREDICT, json={"instances": INSTANCES[:2]})
    assert response.json()["version"] == 2


async def test_old_model_serves_while_the_new_one_loads(manager: ModelManager,
                                                        ref_v2: ArtifactRef) -> None:
    loading = asyncio.create_task(manager.load(MODEL, 2, ref_v2))
    await asyncio.sleep(0)  # the load is now verifying and unpickling in its thread
    assert manager.get(MODEL).version == 1
    assert await loading is True
    assert manager.get(MODEL).version == 2


async def test_a_registry_answer_never_overwrites_a_newer_lifecycle_swap(
        manager: ModelManager, ref_v2: ArtifactRef, store: ArtifactStore) -> None:
    mark = manager.swaps(MODEL)  # taken before asking the registry
    assert await manager.load(MODEL, 2, ref_v2) is True  # a lifecycle event lands meanwhile
    stale = ArtifactRef(digest=manager.get(MODEL).digest, signature=ref_v2.signature,
                        size_bytes=1)
    assert await manager.load(MODEL, 1, stale, unless_swapped_since=mark) is False
    assert manager.get(MODEL).version == 2
    assert await manager.load(MODEL, 3, ref_v2, unless_swapped_since=manager.swaps(MODEL))
    assert manager.get(MODEL).version == 3


async def test_kserve_v1_predict_answers_and_publishes_each_instance(
        client: httpx.AsyncClient, model_v1: tree.HoeffdingTreeClassifier,
        emitted: list[PredictionMade]) -> None:
    """KServe's v1 protocol (`:predict`, `instances` → `predictions`), beside /predict."""
    answer = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": INSTANCES})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == [expected(model_v1, x)[0] for x in INSTANCES]
    assert body["prediction_ids"] == [e.prediction_id for e in emitted]
    assert len(set(body["prediction_ids"])) == len(INSTANCES)
    bad = await client.post(f"/v1/models/{MODEL}:predict",
                            json={"instances": [dict(INSTANCES[0], age=400)]})
    assert bad.status_code == 422 and fields_of(bad) == ["instances.0.age"]
    missing = await client.post("/v1/models/nope:predict", json={"instances": INSTANCES})
    assert missing.status_code == 404
