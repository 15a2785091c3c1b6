"""Issue 8, point 3: each model's input schema in the API. `GET /v1/models/{model}` says
which features a model takes (types, ranges, categories), its label and the version serving,
and the OpenAPI document shows a request example per model from its own dataset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from contracts.events import PredictionMade
from services.serving.models import ModelManager
from shared.project import Project, load_project
from tests.unit import test_serving_routes as routes
from tests.unit.test_serving_routes import MODEL, PROJECT_FILE, client_for, inference_app

store, model_v1, manager = routes.store, routes.model_v1, routes.manager  # fixtures, by name

HOUSES = """
[datasets.houses.label]
type = "float"
min = 0

[datasets.houses.features]
rooms = { type = "int", min = 1, max = 9 }
area = { type = "float", min = 10, max = 500 }
city = { type = "str", categories = ["lyon", "oslo"] }
garden = { type = "bool", required = false }

[models.houses-lr]
dataset = "houses"
task = "regression"
pipeline = [{ estimator = "linear_model.LinearRegression" }]

[models.houses-lr.policy]
metric = "mae"
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """The demo project with a second dataset and model of another kind."""
    path = tmp_path / "driftloop.toml"
    path.write_text(PROJECT_FILE.read_text(encoding="utf-8") + HOUSES, encoding="utf-8")
    return load_project(path)


@pytest.fixture
async def client(project: Project, manager: ModelManager) -> AsyncIterator[httpx.AsyncClient]:
    emitted: list[PredictionMade] = []
    async with client_for(inference_app(project, manager, emitted)) as client:
        yield client


async def test_a_model_describes_its_inputs_and_what_serves_it(
        client: httpx.AsyncClient, project: Project) -> None:
    answer = await client.get(f"/v1/models/{MODEL}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["dataset"], body["task"]) == (MODEL, "loans", "classification")
    declared = project.datasets["loans"].features
    assert set(body["features"]) == set(declared)
    assert body["features"]["age"] == {"type": "int", "min": 0, "max": 120, "categories": None,
                                       "required": True}
    assert body["features"]["elevel"]["categories"] == [0, 1, 2, 3, 4]
    assert body["label"]["categories"] == [0, 1]
    assert body["serving"]["version"] == 1 and body["serving"]["digest"]
    # the example is a valid request for this very model
    predicted = await client.post(f"/v1/models/{MODEL}/predict",
                                  json={"features": body["example"]})
    assert predicted.status_code == 200, predicted.text


async def test_a_model_not_serving_yet_still_describes_its_inputs(
        client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models/houses-lr")).json()
    assert body["serving"] is None and body["task"] == "regression"
    assert body["features"]["city"]["categories"] == ["lyon", "oslo"]
    assert body["features"]["garden"]["required"] is False
    assert body["example"] == {"rooms": 5, "area": 255.0, "city": "lyon", "garden": False}


async def test_an_undeclared_model_is_a_404_that_says_so(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/models/nope")
    assert answer.status_code == 404
    assert "nope" in answer.json()["detail"]


async def test_the_openapi_document_shows_each_models_own_request(
        client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    predict = document["paths"]["/v1/models/{model}/predict"]["post"]
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {MODEL, "houses-lr"}
    assert set(examples["houses-lr"]["value"]["features"]) == {"rooms", "area", "city",
                                                               "garden"}
    assert set(examples[MODEL]["value"]["features"]) == {
        "salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"}
    described = document["paths"]["/v1/models/{model}"]["get"]
    assert "200" in described["responses"] and "404" in described["responses"]
