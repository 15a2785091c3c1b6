"""The HTTP edge under hostile input: integers the database cannot hold, unbounded free text,
oversized bodies, validation errors that would echo megabytes back, and responses the OpenAPI
document must describe (issue 5, finding 9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import ValidationError

from contracts.events import ModelTrained
from contracts.http import ErrorDetail
from services.registry.app import create_app as registry_app
from services.registry.settings import RegistrySettings
from services.serving.app import create_app as serving_app
from services.serving.settings import ServingSettings
from shared.http_errors import install_error_handlers
from tests.unit.factories import PROJECT_FILE, model_trained, token_entry
from tests.unit.test_registry_routes import TOKEN, record

MODEL = "loans-tree"
BASE = f"/v1/models/{MODEL}"
MIB = 1024 * 1024


def client_for(app: FastAPI, base: str) -> httpx.AsyncClient:
    # ASGITransport does not run the lifespan: no Kafka, only the HTTP edge. The calls carry
    # an operator token, so what is checked here is the input, not the caller.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base,
                             headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def registry_settings(tmp_path: Path) -> RegistrySettings:
    return RegistrySettings(config=PROJECT_FILE, data_dir=tmp_path, auth_tokens=[
        token_entry(TOKEN)])


@pytest.fixture
async def registry(registry_settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    record(registry_settings, model_trained("run-1", 0.80),
           model_trained("run-2", 0.70, baseline_version=1, baseline_accuracy=0.80))
    async with client_for(registry_app(registry_settings), "http://registry") as client:
        yield client


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = serving_app(ServingSettings(config=PROJECT_FILE, data_dir=tmp_path))
    async with client_for(app, "http://serving") as client:
        yield client


def error_of(response: httpx.Response) -> ErrorDetail:
    return ErrorDetail.model_validate(response.json())


# -- integers the database cannot store -------------------------------------------------------


@pytest.mark.parametrize("version", [2**31, 2**63, 2**64, 10**30])
async def test_huge_version_in_the_path_is_a_client_error(registry: httpx.AsyncClient,
                                                          version: int) -> None:
    response = await registry.get(f"{BASE}/versions/{version}")
    assert response.status_code in (404, 422)
    assert error_of(response).error


@pytest.mark.parametrize("version", [2**31, 2**63, 10**30])
async def test_huge_version_in_a_promote_body_is_422(registry: httpx.AsyncClient,
                                                     version: int) -> None:
    response = await registry.post(f"{BASE}/promote", json={"version": version, "reason": "x"})
    assert response.status_code == 422
    assert [f["field"] for f in error_of(response).fields] == ["version"]


@pytest.mark.parametrize(("field", "value"), [
    ("baseline_version", 2**63), ("baseline_version", 2**31), ("run_id", "r" * 101),
    ("request_id", "q" * 201), ("metric", "m" * 51)])
def test_a_trained_event_the_database_cannot_store_is_invalid(field: str, value: Any,
                                                              tmp_path: Path) -> None:
    """Refused as the contract, so the consumer dead-letters it at once (it used to reach
    the database: an OverflowError on SQLite, a DataError on PostgreSQL, retried as if the
    database were down)."""
    forged = model_trained("run-1", 0.9).model_dump(mode="json") | {field: value}
    with pytest.raises(ValidationError):
        ModelTrained.model_validate(forged)


# -- free text is bounded ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["promote", "rollback"])
async def test_a_long_reason_is_refused_before_anything_is_stored(
        registry: httpx.AsyncClient, path: str) -> None:
    before = (await registry.get(f"{BASE}/audit")).json()
    body: dict[str, Any] = {"reason": "x" * 1001} | ({"version": 2} if path == "promote" else {})
    response = await registry.post(f"{BASE}/{path}", json=body)
    assert response.status_code == 422
    assert [f["field"] for f in error_of(response).fields] == ["reason"]
    assert (await registry.get(f"{BASE}/audit")).json() == before


async def test_a_reason_within_the_bound_is_recorded(registry: httpx.AsyncClient) -> None:
    response = await registry.post(f"{BASE}/promote", json={"version": 2, "reason": "y" * 1000})
    assert response.status_code == 200
    assert response.json()["stage"] == "champion"
    audit = (await registry.get(f"{BASE}/audit")).json()
    assert audit[-2]["reason"] == "y" * 1000  # then v1's archival


# -- request bodies are capped ----------------------------------------------------------------


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A body sent without Content-Length (chunked), so only counting can stop it."""
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


async def test_an_oversized_body_is_413_with_the_error_shape(registry: httpx.AsyncClient) -> None:
    body = b'{"version": 2, "reason": "' + b"x" * (2 * MIB) + b'"}'
    response = await registry.post(f"{BASE}/promote", content=body,
                                   headers={"content-type": "application/json"})
    assert response.status_code == 413
    error = error_of(response)
    assert error.error == "RequestTooLarge" and str(MIB) in error.detail
    assert len(response.content) < 1000


async def test_an_oversized_chunked_body_is_413(registry: httpx.AsyncClient) -> None:
    response = await registry.post(f"{BASE}/promote", content=chunks(2 * MIB),
                                   headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert error_of(response).error == "RequestTooLarge"


async def test_a_lying_content_length_is_400(registry: httpx.AsyncClient) -> None:
    response = await registry.post(f"{BASE}/promote", content=b"{}",
                                   headers={"content-type": "application/json",
                                            "content-length": "two"})
    assert response.status_code == 400
    assert error_of(response).error == "InvalidRequest"


async def test_serving_takes_larger_bodies_than_the_default_but_not_unbounded(
        serving: httpx.AsyncClient) -> None:
    instances = [{"salary": 1.0, "pad": "p" * 1000} for _ in range(2000)]  # ~2 MB
    accepted = await serving.post(f"{BASE}/predict", json={"instances": instances})
    assert accepted.status_code != 413  # refused for its features, not for its size
    huge = await serving.post(f"{BASE}/predict", content=chunks(9 * MIB),
                              headers={"content-type": "application/json"})
    assert huge.status_code == 413


def test_the_cap_is_a_setting_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RegistrySettings().max_request_bytes == MIB
    assert ServingSettings().max_request_bytes > MIB
    monkeypatch.setenv("DRIFTLOOP_MAX_REQUEST_BYTES", "4096")
    monkeypatch.setenv("DRIFTLOOP_SERVING_MAX_REQUEST_BYTES", "8192")
    assert RegistrySettings().max_request_bytes == 4096
    assert ServingSettings().max_request_bytes == 8192


# -- validation errors never echo unbounded input ---------------------------------------------


async def test_a_wrong_typed_huge_field_is_not_echoed(registry: httpx.AsyncClient) -> None:
    response = await registry.post(f"{BASE}/promote",
                                   json={"version": "9" * 500_000, "reason": "r"})
    assert response.status_code == 422
    assert len(response.content) < 5_000
    assert [f["field"] for f in error_of(response).fields] == ["version"]


async def test_thousands_of_errors_are_summarised(registry: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {"version": 2, "reason": "r"}
    body.update({f"extra{i}": "x" * 40 for i in range(10_000)})
    response = await registry.post(f"{BASE}/promote", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert len(response.content) < 10_000
    assert 0 < len(error.fields) <= 50
    assert "10000 problems" in error.detail


async def test_serving_does_not_echo_a_huge_feature_value(serving: httpx.AsyncClient) -> None:
    response = await serving.post(f"{BASE}/predict",
                                  json={"features": {"salary": "s" * 500_000}})
    assert response.status_code == 422
    assert len(response.content) < 5_000
    assert "salary" in {f["field"].split(".")[-1] for f in error_of(response).fields}


async def test_serving_summarises_thousands_of_undeclared_features(
        serving: httpx.AsyncClient) -> None:
    features = {f"f{i}": 1.0 for i in range(10_000)}
    response = await serving.post(f"{BASE}/predict", json={"features": features})
    assert response.status_code == 422
    assert len(response.content) < 10_000


# -- the OpenAPI document describes what the services answer ----------------------------------


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def error_schema(responses: dict[str, Any], status: int) -> str:
    return str(responses[str(status)]["content"]["application/json"]["schema"]["$ref"])


async def test_registry_routes_declare_their_errors_with_the_error_shape(
        registry: httpx.AsyncClient) -> None:
    paths = (await openapi(registry))["paths"]
    for path, operations in paths.items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            for status in (400, 404, 413, 422):
                assert error_schema(operation["responses"], status).endswith("/ErrorDetail"), (
                    method, path, status)
    for path in ("champion", "promote", "rollback"):
        operation = next(iter(paths[f"/v1/models/{{model}}/{path}"].values()))
        assert error_schema(operation["responses"], 409).endswith("/ErrorDetail")
    for path in ("promote", "rollback"):  # what the bearer-token guards answer
        responses = paths[f"/v1/models/{{model}}/{path}"]["post"]["responses"]
        assert error_schema(responses, 401).endswith("/ErrorDetail")
        assert error_schema(responses, 403).endswith("/ErrorDetail")


async def test_ops_routes_are_described(serving: httpx.AsyncClient) -> None:
    spec = await openapi(serving)
    paths = spec["paths"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == [next(iter(metrics))] and next(iter(metrics)).startswith("text/plain")
    assert "application/json" not in metrics
    readyz = paths["/readyz"]["get"]["responses"]
    assert readyz["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/Readiness")
    healthz = paths["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]
    assert healthz["schema"]["$ref"].endswith("/Health")
    predict = paths["/v1/models/{model}/predict"]["post"]["responses"]
    for status in (404, 409, 413, 422):
        assert error_schema(predict, status).endswith("/ErrorDetail")
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_metrics_answers_its_declared_content_type(serving: httpx.AsyncClient) -> None:
    spec = await openapi(serving)
    declared = next(iter(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]))
    response = await serving.get("/metrics")
    assert response.headers["content-type"].split(";")[0] == declared.split(";")[0]


# -- the database unavailable is a 503, not a 500 ---------------------------------------------


async def test_a_locked_or_unreachable_database_is_503(registry: httpx.AsyncClient,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from services.registry.store import RegistryStore

    def down(self: RegistryStore) -> None:
        raise OperationalError("SELECT secret FROM x", {}, Exception("database is locked"))

    monkeypatch.setattr(RegistryStore, "models", down)
    response = await registry.get("/v1/models")
    assert response.status_code == 503
    error = error_of(response)
    assert error.error == "DependencyUnavailable" and "secret" not in error.detail


async def test_a_client_that_leaves_mid_body_is_no_server_error() -> None:
    """Under load a client may give up while its body is read; that is the client's doing,
    not a bug: 499 and no traceback (serving logged one per dropped request)."""
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(request: Request) -> int:
        return len(await request.body())

    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/echo", "raw_path": b"/echo", "query_string": b"",
             "root_path": "", "headers": [(b"content-length", b"10")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
