"""Every route of every service against the role matrix, over HTTP (httpx against each
service's `create_app`, no Kafka: the bus's publish is replaced by a recorder).

The mutating routes are found by walking each app's routes, so a new POST/PUT/PATCH/DELETE
endpoint is in this matrix without anyone remembering to add it."""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts.base import Contract
from contracts.http import ErrorDetail
from services.registry.handlers import Registry
from services.registry.store import RegistryStore
from shared.bus import Bus
from tests.unit.factories import (
    PROJECT_FILE,
    REGISTRY_KEY,
    TRAINING_KEY,
    demo_project,
    model_trained,
)

SERVICES = ("ingestion", "training", "registry", "serving", "monitoring")
TOKENS = {role: f"dl_{role}-token-for-the-route-tests-0123456789" for role in
          ("viewer", "operator", "admin")}
OWNERS = {"viewer": "vera", "operator": "otto", "admin": "ada"}
ENTRIES = [{"name": OWNERS[role], "role": role,
            "sha256": hashlib.sha256(token.encode()).hexdigest()}
           for role, token in TOKENS.items()]
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Open by nature: liveness, readiness and the API's own description say nothing of state.
ALWAYS_OPEN = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
PREDICT = "/v1/models/{model}/predict"
FEEDBACK = "/v1/feedback"
V2_INFER = "/v2/models/{model}/infer"
V2_INFER_VERSION = "/v2/models/{model}/versions/{version}/infer"
KSERVE_PREDICT = "/v1/models/{model}:predict"
INFERENCE = (PREDICT, FEEDBACK, V2_INFER, V2_INFER_VERSION, KSERVE_PREDICT)
"""Open by setting (DRIFTLOOP_AUTH_OPEN_PREDICT): an answer, and the label of an answer."""
# The state-changing endpoints of the platform, and what each needs. A new one fails
# test_the_mutating_routes_are_the_known_ones until it is added here (and guarded).
KNOWN_MUTATING = {("registry", "/v1/models/{model}/promote"): "operator",
                  ("registry", "/v1/models/{model}/rollback"): "operator",
                  ("training", "/v1/models/{model}/train"): "operator"}
BODIES: dict[str, dict[str, Any]] = {
    "/v1/models/{model}/promote": {"version": 2, "reason": "reviewed", "actor": "mallory"},
    "/v1/models/{model}/rollback": {"reason": "incident", "actor": "mallory"},
    "/v1/models/{model}/train": {"last": 100},
    PREDICT: {"features": {}},
    FEEDBACK: {"prediction_id": "p-1", "label": 1},
    KSERVE_PREDICT: {"instances": [{}]},
    V2_INFER: {"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [40]}]},
    V2_INFER_VERSION: {"inputs": [{"name": "age", "shape": [1], "datatype": "INT64",
                                   "data": [40]}]},
}


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def concrete(path: str) -> str:
    return re.sub(r"\{version\}", "1", path.replace("{model}", "loans-tree"))


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[Contract]:
    events: list[Contract] = []

    async def publish(self: Bus, topic: object, event: Contract, key: str,
                      *args: object, **kwargs: object) -> None:
        events.append(event)

    monkeypatch.setattr(Bus, "publish", publish)
    return events


AppFactory = Callable[..., FastAPI]


@pytest.fixture
def build(tmp_path: Path, published: list[Contract]) -> AppFactory:
    """create_app of a service with the given auth settings, on a registry holding v1
    (champion) and v2 (rejected)."""
    store = RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        registry = Registry(demo_project(), store, REGISTRY_KEY, TRAINING_KEY.verifier())
        registry.record(model_trained("run-1", 0.80))
        registry.record(model_trained("run-2", 0.70, baseline_version=1, baseline_accuracy=0.8))
    finally:
        store.close()

    def make(service: str, **auth: Any) -> FastAPI:
        module = importlib.import_module(f"services.{service}.settings")
        settings_class = getattr(module, f"{service.capitalize()}Settings")
        settings = settings_class(config=PROJECT_FILE, data_dir=tmp_path, **auth)
        app: FastAPI = importlib.import_module(f"services.{service}.app").create_app(settings)
        return app

    return make


async def call(app: FastAPI, method: str, path: str,
               headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://service") as client:
        return await client.request(method, concrete(path), headers=headers,
                                    json=BODIES.get(path) if method in MUTATING else None)


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """(METHOD, path) of every endpoint, from the OpenAPI document (included routers are not
    flattened into app.routes by recent FastAPI)."""
    return sorted((method.upper(), path) for path, item in app.openapi()["paths"].items()
                  for method in item)


def mutating(app: FastAPI) -> list[tuple[str, str]]:
    return [(m, p) for m, p in routes(app) if m in MUTATING and p not in INFERENCE]


def reads(app: FastAPI) -> list[tuple[str, str]]:
    return [(m, p) for m, p in routes(app) if m not in MUTATING and p not in ALWAYS_OPEN]


def assert_refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = ErrorDetail.model_validate(response.json())
    if response.request.url.path.startswith("/v2/"):  # V2 clients show `error` alone
        assert body.error[:40] == body.detail[:40]  # the message (cut to the field's bound)
    else:
        assert body.error == {401: "Unauthenticated", 403: "Forbidden"}[status]
    for word in words:
        assert word in body.detail, body.detail
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_mutating_routes_are_the_known_ones(build: AppFactory) -> None:
    found = {(service, path) for service in SERVICES
             for _, path in mutating(build(service, auth_tokens=ENTRIES))}
    assert found == set(KNOWN_MUTATING)


@pytest.mark.parametrize(("service", "path"), sorted(KNOWN_MUTATING))
async def test_mutating_route_matrix(build: AppFactory, published: list[Contract],
                                     service: str, path: str) -> None:
    app = build(service, auth_tokens=ENTRIES)
    assert_refused(await call(app, "POST", path), 401, "bearer token")
    assert_refused(await call(app, "POST", path, {"Authorization": "Basic b3R0bzpwdw=="}),
                   401, "bearer token")
    assert_refused(await call(app, "POST", path, {"Authorization": "Bearer dl_forged"}), 401,
                   "not one this service accepts")
    assert_refused(await call(app, "POST", path, {"Authorization": "Bearer " + "x" * 5000}),
                   401, "not one this service accepts")
    assert_refused(await call(app, "POST", path, bearer("viewer")), 403, "vera", "viewer",
                   "needs operator")
    assert not published, "a refused call published an event"
    for role in ("operator", "admin"):
        response = await call(app, "POST", path, bearer(role))
        assert response.status_code not in (401, 403), response.text


@pytest.mark.parametrize(("service", "path"), sorted(KNOWN_MUTATING))
async def test_with_no_token_configured_mutations_are_refused_saying_how(
        build: AppFactory, service: str, path: str) -> None:
    app = build(service)
    for headers in (None, bearer("admin")):
        assert_refused(await call(app, "POST", path, headers), 401,
                       "DRIFTLOOP_AUTH_TOKENS", "driftloop token create")


async def test_manual_train_records_the_tokens_owner(build: AppFactory,
                                                     published: list[Contract]) -> None:
    response = await call(build("training", auth_tokens=ENTRIES), "POST",
                          "/v1/models/{model}/train", bearer("operator"))
    assert response.status_code == 202, response.text
    [request] = published
    assert request.model_dump()["requested_by"] == "otto"
    assert response.json()["request_id"] == request.model_dump()["request_id"]


async def test_manual_train_of_an_undeclared_model_is_404_at_once(
        build: AppFactory, published: list[Contract]) -> None:
    app = build("training", auth_tokens=ENTRIES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://training") as client:
        response = await client.post("/v1/models/ghost/train", json={}, headers=bearer("admin"))
    assert response.status_code == 404 and not published


@pytest.mark.parametrize("service", SERVICES)
async def test_reads_are_open_by_default(build: AppFactory, service: str) -> None:
    app = build(service)  # no token at all: reads still answer
    for method, path in reads(app):
        response = await call(app, method, path)
        assert response.status_code not in (401, 403), (path, response.text)


@pytest.mark.parametrize("service", SERVICES)
async def test_closed_reads_need_a_viewer(build: AppFactory, service: str) -> None:
    app = build(service, auth_tokens=ENTRIES, auth_open_reads=False, auth_open_predict=False)
    checked = reads(app) + ([("POST", path) for path in INFERENCE] if service == "serving"
                            else [])
    assert ("GET", "/metrics") in checked
    assert service not in ("registry", "monitoring", "serving") or len(checked) > 2
    for method, path in checked:
        assert_refused(await call(app, method, path), 401)
        response = await call(app, method, path, bearer("viewer"))
        assert response.status_code not in (401, 403), (path, response.text)
    for path in ("/healthz", "/openapi.json"):
        assert (await call(app, "GET", path)).status_code == 200


@pytest.mark.parametrize("path", INFERENCE)
async def test_predict_is_open_by_default_even_when_reads_are_closed(
        build: AppFactory, path: str) -> None:
    app = build("serving", auth_tokens=ENTRIES, auth_open_reads=False)
    response = await call(app, "POST", path)
    assert response.status_code not in (401, 403), response.text


async def test_openapi_describes_the_bearer_scheme_and_the_refusals(build: AppFactory) -> None:
    spec = (await call(build("registry", auth_tokens=ENTRIES), "GET", "/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    promote = spec["paths"]["/v1/models/{model}/promote"]["post"]
    assert {"401", "403"} <= promote["responses"].keys()
    assert promote["security"] == [{"HTTPBearer": []}]


async def test_no_token_is_ever_logged_or_echoed(build: AppFactory,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    wrong = "dl_wrong-token-that-must-not-appear-anywhere"
    app = build("registry", auth_tokens=ENTRIES)
    bodies = []
    for headers in (bearer("viewer"), bearer("operator"), bearer("admin"),
                    {"Authorization": f"Bearer {wrong}"}):
        for path in ("/v1/models/{model}/promote", "/v1/models/{model}/rollback"):
            bodies.append((await call(app, "POST", path, headers)).text)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "refused" in logged  # the refusals are logged ...
    for secret in (*TOKENS.values(), wrong):  # ... without the token
        assert secret not in logged
        assert all(secret not in body for body in bodies)


@pytest.fixture
async def registry_client(build: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    app = build("registry", auth_tokens=ENTRIES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://registry") as client:
        yield client


async def test_admin_may_do_what_an_operator_may(registry_client: httpx.AsyncClient) -> None:
    response = await registry_client.post("/v1/models/loans-tree/promote", headers=bearer("admin"),
                                          json={"version": 2, "reason": "ok"})
    assert response.status_code == 200, response.text
    audit = (await registry_client.get("/v1/models/loans-tree/audit")).json()
    assert audit[-2]["actor"] == "ada"
