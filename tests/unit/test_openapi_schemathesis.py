"""schemathesis against every service's OpenAPI document, in-process on its ASGI app.

Each service is built the way its `create_app` builds it, on a private data directory, and
driven without its lifespan: the lifespan only connects Kafka and starts consumers, while every
route answers from the state the test sets up (a registry database with three versions, a
serving app with a champion loaded from a signed artifact). Examples are derandomized and few,
so a failure reproduces and the file stays fast; both valid and invalid inputs are generated.
Checks: no 5xx, every status code and content type declared, every body matching its schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from river import tree
from river.datasets import synth
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.ingestion.app import create_app as ingestion_app
from services.ingestion.settings import IngestionSettings
from services.monitoring.app import create_app as monitoring_app
from services.monitoring.settings import MonitoringSettings
from services.registry.app import create_app as registry_app
from services.registry.handlers import Registry
from services.registry.settings import RegistrySettings
from services.registry.store import RegistryStore
from services.serving.handlers import Predictor
from services.serving.models import ModelManager
from services.serving.routes import build_router as serving_router
from services.serving.settings import ServingSettings
from services.training.app import create_app as training_app
from services.training.settings import TrainingSettings
from shared.artifacts import ArtifactStore
from shared.bus import Bus
from shared.project import load_project
from shared.service import Runtime, build_app
from tests.unit.factories import (
    PROJECT_FILE,
    REGISTRY_KEY,
    TRAINING_KEY,
    demo_project,
    model_trained,
    token_entry,
)

MODEL = "loans-tree"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}
"""Per operation: enough to reach every declared status of these small APIs, few enough that
the whole file runs in well under a minute (invalid inputs are costly to generate: schemathesis
filters its drafts until each one really breaks the schema)."""

OPERATOR_TOKEN = "dl_schemathesis-operator-token-0123456789"
TOKENS = [token_entry(OPERATOR_TOKEN, "schemathesis")]
"""Every case carries an operator token, so the state-changing routes are exercised past
their guard (the guard itself: tests/unit/test_auth_routes.py)."""

ASGI = Callable[..., Any]
INSTANCES = [x for x, _ in synth.Agrawal(seed=99).take(3)]
VALID_PREDICT_BODIES = {"one instance": {"features": INSTANCES[0]},
                        "a batch": {"instances": INSTANCES}}


def without_lifespan(app: FastAPI) -> ASGI:
    """The app with its lifespan refused (as an app without lifespan support does), so no
    Kafka is needed; HTTP requests reach the real middleware, handlers and routes."""

    async def shim(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan in this test")
        await app(scope, receive, send)

    return shim


def registry(data_dir: Path) -> FastAPI:
    settings = RegistrySettings(config=PROJECT_FILE, data_dir=data_dir, auth_tokens=TOKENS)
    store = RegistryStore(settings.resolved_database_url())
    try:
        logic = Registry(demo_project(), store, REGISTRY_KEY, TRAINING_KEY.verifier())
        for event in (model_trained("run-1", 0.80),
                      model_trained("run-2", 0.90, baseline_version=1, baseline_accuracy=0.80),
                      model_trained("run-3", 0.85, baseline_version=2, baseline_accuracy=0.90)):
            logic.record(event)
    finally:
        store.close()
    return registry_app(settings)


async def _serving_with_champion(data_dir: Path) -> FastAPI:
    """Serving as create_app composes it, with a champion loaded from a signed artifact."""
    settings = ServingSettings(config=PROJECT_FILE, data_dir=data_dir, auth_tokens=TOKENS)
    artifacts = ArtifactStore(data_dir / "artifacts", signer=TRAINING_KEY)
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in synth.Agrawal(seed=1).take(300):
        model.learn_one(x, y)
    manager = ModelManager(artifacts, declared=[MODEL])
    assert await manager.load(MODEL, 1, artifacts.save_model(model))
    events: list[Any] = []

    async def deliver(answered: list[Any]) -> None:  # no Kafka here: the events are kept
        events.extend(answered)

    predictor = Predictor(load_project(settings.config), manager, deliver)

    async def on_start(runtime: Runtime) -> None:  # never called: no lifespan here
        raise AssertionError

    app, _ = build_app("serving", settings, on_start, title="driftloop serving")
    app.include_router(serving_router(predictor))
    return app


def serving(data_dir: Path) -> FastAPI:
    import asyncio

    return asyncio.run(_serving_with_champion(data_dir))


SERVICES: dict[str, Callable[[Path], FastAPI]] = {
    "ingestion": lambda d: ingestion_app(IngestionSettings(config=PROJECT_FILE, data_dir=d,
                                                           auth_tokens=TOKENS)),
    "training": lambda d: training_app(TrainingSettings(config=PROJECT_FILE, data_dir=d,
                                                        auth_tokens=TOKENS)),
    "registry": registry,
    "serving": serving,
    "monitoring": lambda d: monitoring_app(MonitoringSettings(config=PROJECT_FILE, data_dir=d,
                                                              auth_tokens=TOKENS)),
}


@pytest.fixture(scope="module", autouse=True)
def no_kafka() -> Iterator[None]:
    """Without the lifespan the bus is not started: a route that publishes (training's manual
    train) hands its event to this stand-in instead of Kafka."""

    async def publish(self: Bus, *args: Any, **kwargs: Any) -> None:
        return None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Bus, "publish", publish)
        yield


@pytest.fixture(params=sorted(SERVICES), scope="module")
def service(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ASGI]]:
    name = request.param
    yield name, without_lifespan(SERVICES[name](tmp_path_factory.mktemp(name)))


def strategies_for(operation: Any, mode: GenerationMode) -> list[tuple[str, Any]]:
    """Cases for `operation`; where it takes a model name, a second run names the declared
    model, so the routes' real work (versions, promotions, predictions) is reached and not
    only their 404."""
    runs = [("", operation.as_strategy(generation_mode=mode))]
    if "{model}" in operation.path:
        runs.append((f" model={MODEL}", operation.as_strategy(
            generation_mode=mode, path_parameters={"model": MODEL})))
    if operation.path.endswith("/predict") and mode is GenerationMode.POSITIVE:
        for name, body in VALID_PREDICT_BODIES.items():  # the 200 answers and their schema
            runs.append((f" {name}", operation.as_strategy(
                generation_mode=mode, path_parameters={"model": MODEL}, body=body)))
    return runs


def failures_of(app: ASGI, mode: GenerationMode) -> list[str]:
    """Every operation driven with `mode` inputs; the failures, one line each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    found: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # /readyz answers 503 by design until the lifespan has run (declared in the spec).
        checks = [c for c in CHECKS if operation.path != "/readyz" or c is not not_a_server_error]
        for label, strategy in strategies_for(operation, mode):

            @settings(max_examples=EXAMPLES[mode], derandomize=True, deadline=None,
                      database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def run(case: Any) -> None:
                case.call_and_validate(checks=checks,  # noqa: B023 (run at once, in the loop)
                                       headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})

            try:
                run()
            except Unsatisfiable:  # nothing invalid to send when the only input is fixed
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # all of them: one run shows all
                found.append(f"{operation.label}{label} [{mode.value}]: {str(exc)[:2000]}")
    return found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_service_conforms_to_its_openapi(service: tuple[str, ASGI],
                                         mode: GenerationMode) -> None:
    name, app = service
    failures = failures_of(app, mode)
    assert not failures, f"{name}:\n" + "\n\n".join(failures)
