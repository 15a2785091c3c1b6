"""Issue 8, point 2: the Open Inference Protocol (V2). A V2 client nobody here wrote —
tritonclient[http], unmodified — checks health, reads a model's metadata and infers over real
HTTP against serving's routes with a real River model; every V2 prediction is published as
an event like /v1's."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from fastapi import FastAPI
from river import tree
from tritonclient.utils import InferenceServerException

from contracts.events import PredictionMade
from services.serving.handlers import Predictor
from services.serving.models import ModelManager
from services.serving.routes import build_router
from services.serving.v2 import build_v2_router
from shared.artifacts import ArtifactStore
from shared.auth import Authenticator
from shared.http_errors import install_error_handlers
from shared.project import load_project
from tests.unit.factories import TRAINING_KEY
from tests.unit.test_serving_routes import INSTANCES, MODEL, PROJECT_FILE, expected, train

DTYPES = {"FP64": np.float64, "INT64": np.int64}


class Served:
    def __init__(self, url: str, model: tree.HoeffdingTreeClassifier,
                 emitted: list[PredictionMade]) -> None:
        self.url, self.model, self.emitted = url, model, emitted


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Serving's routes with a signed, loaded model, on a real loopback port."""
    import asyncio

    model = train()
    store = ArtifactStore(Path(tmp_path_factory.mktemp("v2")) / "artifacts", signer=TRAINING_KEY)
    manager = ModelManager(store, declared=[MODEL])
    assert asyncio.run(manager.load(MODEL, 1, store.save_model(model)))
    emitted: list[PredictionMade] = []

    async def deliver(events: list[tuple[str, bytes]]) -> None:
        emitted.extend(PredictionMade.model_validate_json(value) for _, value in events)

    predictor = Predictor(load_project(PROJECT_FILE), manager, deliver)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router(predictor))
    app.include_router(build_v2_router(predictor, Authenticator([]), lambda: True))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Served(f"127.0.0.1:{port}", model, emitted)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def client(served: Served) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=served.url)
    yield client
    client.close()


def inputs_for(client: triton.InferenceServerClient, rows: list[dict[str, Any]],
               binary: bool = False) -> list[triton.InferInput]:
    metadata = client.get_model_metadata(MODEL)
    tensors = []
    for spec in metadata["inputs"]:
        tensor = triton.InferInput(spec["name"], [len(rows), 1], spec["datatype"])
        values = np.array([row[spec["name"]] for row in rows], dtype=DTYPES[spec["datatype"]])
        tensor.set_data_from_numpy(values.reshape(len(rows), 1), binary_data=binary)
        tensors.append(tensor)
    return tensors


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "driftloop"
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    dataset = load_project(PROJECT_FILE).datasets["loans"]
    assert [i["name"] for i in metadata["inputs"]] == list(dataset.features)
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]}["age"] == "INT64"
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]}["salary"] == "FP64"
    assert [o["name"] for o in metadata["outputs"]] == ["prediction", "prediction_id"]
    assert metadata["versions"] == ["1"]
    assert client.get_model_metadata(MODEL, model_version="1")["name"] == MODEL
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model")
    assert not client.is_model_ready("no-such-model")


def test_infer_answers_like_v1_and_publishes_each_prediction(
        client: triton.InferenceServerClient, served: Served) -> None:
    before = len(served.emitted)
    outputs = [triton.InferRequestedOutput("prediction", binary_data=False),
               triton.InferRequestedOutput("prediction_id", binary_data=False)]
    result = client.infer(MODEL, inputs_for(client, INSTANCES), outputs=outputs,
                          request_id="req-7")
    predictions = result.as_numpy("prediction").reshape(-1).tolist()
    assert predictions == [expected(served.model, x)[0] for x in INSTANCES]
    ids = [i.decode() if isinstance(i, bytes) else i
           for i in result.as_numpy("prediction_id").reshape(-1).tolist()]
    published = served.emitted[before:]
    assert [e.prediction_id for e in published] == ids and len(set(ids)) == len(INSTANCES)
    assert all(e.model == MODEL and e.version == 1 for e in published)
    response = result.get_response()
    assert (response["model_version"], response["id"]) == ("1", "req-7")
    versioned = client.infer(MODEL, inputs_for(client, INSTANCES[:2]), model_version="1")
    assert versioned.as_numpy("prediction").reshape(-1).tolist() == predictions[:2]


def test_a_bad_call_says_what_is_wrong(client: triton.InferenceServerClient) -> None:
    rows = [dict(INSTANCES[0], age=400)]  # outside the dataset's range
    with pytest.raises(InferenceServerException, match="age"):
        client.infer(MODEL, inputs_for(client, rows))
    with pytest.raises(InferenceServerException, match="binary"):
        client.infer(MODEL, inputs_for(client, INSTANCES[:1], binary=True))
    with pytest.raises(InferenceServerException):
        client.infer(MODEL, inputs_for(client, INSTANCES[:1]), model_version="9")
