"""The registry's read API over HTTP, on a database filled through the registry's own logic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.http import AuditEntry, ErrorDetail, ModelVersionView, ModelView
from services.registry.app import create_app
from services.registry.handlers import Registry
from services.registry.settings import RegistrySettings
from services.registry.store import RegistryStore
from tests.unit.factories import (
    PROJECT_FILE,
    REGISTRY_KEY,
    TRAINING_KEY,
    demo_project,
    model_trained,
    token_entry,
)

MODEL = "loans-tree"
BASE = f"/v1/models/{MODEL}"
TOKEN = "dl_registry-routes-operator-token"  # the body checks below run for an operator

@pytest.fixture
def settings(tmp_path: Path) -> RegistrySettings:
    return RegistrySettings(config=PROJECT_FILE, data_dir=tmp_path, auth_tokens=[
        token_entry(TOKEN)])


def record(settings: RegistrySettings, *events: Any) -> None:
    """Register trained runs through the registry's logic, on the database the app will use."""
    store = RegistryStore(settings.resolved_database_url())
    try:
        registry = Registry(demo_project(), store, REGISTRY_KEY, TRAINING_KEY.verifier())
        for event in events:
            registry.record(event)
    finally:
        store.close()


@asynccontextmanager
async def open_client(settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    # ASGITransport does not run the lifespan: no Kafka, no consumer, only the API.
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://registry",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
async def empty(settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with open_client(settings) as client:
        yield client


@pytest.fixture
async def one_version(settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    record(settings, model_trained("run-1", 0.80))
    async with open_client(settings) as client:
        yield client


@pytest.fixture
async def three_versions(settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    record(settings,
           model_trained("run-1", 0.80),
           model_trained("run-2", 0.90, baseline_version=1, baseline_accuracy=0.80),
           model_trained("run-3", 0.85, baseline_version=2, baseline_accuracy=0.90))
    async with open_client(settings) as client:
        yield client


def error_of(response: httpx.Response) -> ErrorDetail:
    return ErrorDetail.model_validate(response.json())


# -- before any version -----------------------------------------------------------------------


async def test_models_lists_every_declared_model_even_unregistered(
        empty: httpx.AsyncClient) -> None:
    response = await empty.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == [{"model": MODEL, "champion_version": None, "versions": 0}]


async def test_champion_is_409_before_any_version(empty: httpx.AsyncClient) -> None:
    response = await empty.get(f"{BASE}/champion")
    assert response.status_code == 409
    assert error_of(response).error == "ModelNotReady"


@pytest.mark.parametrize("path", ["versions", "lineage", "audit"])
async def test_lists_are_empty_before_any_version(empty: httpx.AsyncClient, path: str) -> None:
    response = await empty.get(f"{BASE}/{path}")
    assert response.status_code == 200 and response.json() == []


# -- one version ------------------------------------------------------------------------------


async def test_models_shows_the_champion(one_version: httpx.AsyncClient) -> None:
    models = [ModelView.model_validate(m) for m in (await one_version.get("/v1/models")).json()]
    assert models == [ModelView(model=MODEL, champion_version=1, versions=1)]


async def test_versions_lists_the_registered_version(one_version: httpx.AsyncClient) -> None:
    response = await one_version.get(f"{BASE}/versions")
    assert response.status_code == 200
    [view] = [ModelVersionView.model_validate(v) for v in response.json()]
    expected = model_trained("run-1", 0.80)
    assert (view.model, view.version, view.run_id, view.stage) == (MODEL, 1, "run-1", "champion")
    assert view.metrics == {"accuracy": 0.80}
    assert view.artifact == expected.artifact
    assert view.lineage == expected.lineage
    assert view.decision == "first version of the model"
    assert view.created_at.utcoffset() is not None


async def test_version_by_number(one_version: httpx.AsyncClient) -> None:
    response = await one_version.get(f"{BASE}/versions/1")
    assert response.status_code == 200
    listed = (await one_version.get(f"{BASE}/versions")).json()
    assert response.json() == listed[0]


async def test_unknown_version_is_404(one_version: httpx.AsyncClient) -> None:
    response = await one_version.get(f"{BASE}/versions/7")
    assert response.status_code == 404
    body = error_of(response)
    assert body.error == "VersionNotFound" and "7" in body.detail


async def test_version_number_must_be_an_integer(one_version: httpx.AsyncClient) -> None:
    response = await one_version.get(f"{BASE}/versions/latest")
    assert response.status_code == 422
    assert [f["field"] for f in error_of(response).fields] == ["path.version"]


async def test_champion_is_200_once_a_version_is_promoted(one_version: httpx.AsyncClient) -> None:
    response = await one_version.get(f"{BASE}/champion")
    assert response.status_code == 200
    view = ModelVersionView.model_validate(response.json())
    assert (view.version, view.stage) == (1, "champion")


async def test_lineage(one_version: httpx.AsyncClient) -> None:
    response = await one_version.get(f"{BASE}/lineage")
    assert response.status_code == 200
    [entry] = response.json()
    expected = model_trained("run-1", 0.80)
    assert entry == {
        "version": 1, "stage": "champion", "run_id": "run-1",
        "lineage": expected.lineage.model_dump(mode="json"), "metrics": {"accuracy": 0.80},
        "baseline_version": None, "decision": "first version of the model",
    }


async def test_audit(one_version: httpx.AsyncClient) -> None:
    response = await one_version.get(f"{BASE}/audit")
    assert response.status_code == 200
    [entry] = [AuditEntry.model_validate(e) for e in response.json()]
    assert (entry.model, entry.version, entry.action, entry.actor) == (
        MODEL, 1, "promoted", "policy")
    assert entry.reason == "first version of the model"


# -- several versions -------------------------------------------------------------------------


async def test_stages_after_a_promotion_and_a_rejection(three_versions: httpx.AsyncClient) -> None:
    views = [ModelVersionView.model_validate(v)
             for v in (await three_versions.get(f"{BASE}/versions")).json()]
    assert [(v.version, v.stage) for v in views] == [
        (1, "archived"), (2, "champion"), (3, "rejected")]
    assert views[1].baseline_version == 1 and views[1].baseline_metrics == {"accuracy": 0.80}
    models = (await three_versions.get("/v1/models")).json()
    assert models == [{"model": MODEL, "champion_version": 2, "versions": 3}]
    champion = (await three_versions.get(f"{BASE}/champion")).json()
    assert champion["version"] == 2


async def test_audit_is_oldest_first(three_versions: httpx.AsyncClient) -> None:
    entries = [AuditEntry.model_validate(e)
               for e in (await three_versions.get(f"{BASE}/audit")).json()]
    assert [(e.version, e.action) for e in entries] == [
        (1, "promoted"), (2, "promoted"), (1, "archived"), (3, "rejected")]
    assert entries[2].reason == "replaced by v2"


async def test_lineage_carries_each_decision(three_versions: httpx.AsyncClient) -> None:
    entries = (await three_versions.get(f"{BASE}/lineage")).json()
    assert [(e["version"], e["run_id"], e["baseline_version"]) for e in entries] == [
        (1, "run-1", None), (2, "run-2", 1), (3, "run-3", 2)]
    assert "not better by the margin" in entries[2]["decision"]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["versions", "champion", "lineage", "audit"])
async def test_unknown_model_is_404(one_version: httpx.AsyncClient, path: str) -> None:
    response = await one_version.get(f"/v1/models/nope/{path}")
    assert response.status_code == 404
    body = error_of(response)
    assert body.error == "ModelNotFound" and "nope" in body.detail


async def test_unknown_models_version_is_404(one_version: httpx.AsyncClient) -> None:
    assert (await one_version.get("/v1/models/nope/versions/1")).status_code == 404


@pytest.mark.parametrize(("body", "fields"), [
    ({"version": 0, "reason": "fix"}, ["version"]),
    ({"version": "two", "reason": "fix"}, ["version"]),
    ({"version": 1, "reason": ""}, ["reason"]),
    ({"version": 1}, ["reason"]),
    ({"version": 1, "reason": "fix", "force": True}, ["force"]),
    ({"reason": "fix"}, ["version"]),
])
async def test_bad_promote_body_is_422_naming_the_field(
        one_version: httpx.AsyncClient, body: dict[str, Any], fields: list[str]) -> None:
    response = await one_version.post(f"{BASE}/promote", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error.error == "InvalidRequest"
    assert [f["field"] for f in error.fields] == fields
    assert all(field in error.detail for field in fields)


async def test_promote_body_that_is_not_json_is_422(one_version: httpx.AsyncClient) -> None:
    response = await one_version.post(f"{BASE}/promote", content=b"{nope",
                                      headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert error_of(response).error == "InvalidRequest"


async def test_bad_rollback_body_is_422_naming_the_field(one_version: httpx.AsyncClient) -> None:
    response = await one_version.post(f"{BASE}/rollback", json={"reason": ""})
    assert response.status_code == 422
    assert [f["field"] for f in error_of(response).fields] == ["reason"]
