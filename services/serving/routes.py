"""The inference API: parse the raw body, call the predictor, deliver the events, answer
with orjson. A large body is parsed and predicted in a worker thread (the GIL is handed back
every few ms), so one 1,000-instance batch does not stall every other request.

Predict is open unless DRIFTLOOP_AUTH_OPEN_PREDICT=false, the model list unless
DRIFTLOOP_AUTH_OPEN_READS=false (then each needs a viewer token); serving changes no state
over HTTP.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from contracts.http import (
    BatchPredictRequest,
    BatchPredictResponse,
    KServePredictResponse,
    ModelSchema,
    PredictRequest,
    PredictResponse,
    ServedVersion,
    ValueSchema,
)
from services.serving.calls import delivered, invalid_body, off_the_loop_if_large, parsed
from services.serving.handlers import Answer, Predictor
from shared.auth import AUTH_RESPONSES, Authenticator
from shared.errors import InvalidFeatures
from shared.http_errors import error_responses, json_response


def _parse(body: bytes) -> tuple[list[dict[str, Any]], list[str], bool]:
    """(instances, their field paths, is_batch) or InvalidFeatures naming the field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidFeatures(detail=f"body is not valid JSON: {exc}",
                              errors=[("body", "not valid JSON")]) from None
    try:
        if isinstance(data, dict) and "instances" in data:
            batch = BatchPredictRequest.model_validate(data)
            return (batch.instances, [f"instances.{i}" for i in range(len(batch.instances))],
                    True)
        single = PredictRequest.model_validate(data)
        return [single.features], ["features"], False
    except ValidationError as exc:
        raise invalid_body(exc) from None


def _answer(predictor: Predictor, model: str, body: bytes) -> tuple[Answer, bool]:
    instances, paths, is_batch = _parse(body)
    return predictor.predict(model, instances, paths), is_batch


def model_schema(predictor: Predictor, model: str) -> ModelSchema:
    """A declared model's inputs, label and serving version (`ModelNotFound` otherwise)."""
    spec = predictor.project.model(model)
    dataset = predictor.project.datasets[spec.dataset]
    served = next((m for m in predictor.models.loaded() if m.name == model), None)
    return ModelSchema(
        model=model, dataset=spec.dataset, task=spec.task,
        features={name: ValueSchema.model_validate(value.model_dump())
                  for name, value in dataset.features.items()},
        label=ValueSchema.model_validate(dataset.label.model_dump()),
        serving=None if served is None else ServedVersion(
            version=served.version, digest=served.digest, loaded_at=served.loaded_at),
        example=dataset.example())


def request_examples(predictor: Predictor) -> dict[str, Any]:
    """One OpenAPI example request per declared model, from its own dataset."""
    project = predictor.project
    return {name: {"summary": f"{name} (dataset {spec.dataset})",
                   "value": {"features": project.datasets[spec.dataset].example()}}
            for name, spec in project.models.items()}


def build_router(predictor: Predictor, auth: Authenticator | None = None) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["inference"])
    auth = auth or Authenticator([])  # open reads and predict: what the unit tests build

    @router.post("/models/{model}/predict", response_model=PredictResponse | BatchPredictResponse,
                 dependencies=auth.predict, responses=error_responses(401, 403, 404, 409, 413, 422,
                                                                      503),
                 openapi_extra={"requestBody": {"content": {"application/json": {
                     "schema": {"oneOf": [PredictRequest.model_json_schema(),
                                          BatchPredictRequest.model_json_schema()]},
                     "examples": request_examples(predictor)}}, "required": True}})
    async def predict(model: str, request: Request) -> Response:
        """Predict one instance (`features`) or many (`instances`) with the champion."""
        body = await request.body()
        answer, is_batch = await off_the_loop_if_large(
            predictor, body, lambda: _answer(predictor, model, body))
        if (refused := await delivered(predictor, answer)) is not None:
            return refused
        version = answer.served.version
        if is_batch:
            return json_response({"model": model, "version": version,
                                  "predictions": answer.items})
        return json_response({"model": model, "version": version, **answer.items[0]})

    @router.post("/models/{model}:predict", response_model=KServePredictResponse,
                 dependencies=auth.predict, responses=error_responses(401, 403, 404, 409, 413,
                                                                      422, 503),
                 openapi_extra={"requestBody": {"content": {"application/json": {
                     "schema": BatchPredictRequest.model_json_schema()}}, "required": True}})
    async def kserve_predict(model: str, request: Request) -> Response:
        """KServe's v1 protocol: `{"instances": [...]}` → `{"predictions": [...]}` (and
        each answer's `prediction_ids`, which feedback names), published like /predict."""
        body = await request.body()

        def answer_body() -> Answer:
            instances = parsed(BatchPredictRequest, body).instances
            return predictor.predict(model, instances,
                                     [f"instances.{i}" for i in range(len(instances))])

        answer = await off_the_loop_if_large(predictor, body, answer_body)
        if (refused := await delivered(predictor, answer)) is not None:
            return refused
        return json_response({"predictions": [i["prediction"] for i in answer.items],
                              "prediction_ids": [i["prediction_id"] for i in answer.items]})

    @router.get("/models/{model}", response_model=ModelSchema, dependencies=auth.reads,
                responses=error_responses(*((401, 403) if auth.reads else ()), 404, 422))
    async def describe_model(model: str) -> ModelSchema:
        """What `model` takes (each feature's type, range or categories, and whether it is
        required), its label, the version serving it, and a valid example."""
        return model_schema(predictor, model)

    @router.get("/models", dependencies=auth.reads,
                responses=AUTH_RESPONSES if auth.reads else None)
    async def loaded() -> list[dict[str, Any]]:
        """The versions being served."""
        return [{"model": m.name, "version": m.version, "digest": m.digest,
                 "loaded_at": m.loaded_at.isoformat()} for m in predictor.models.loaded()]

    return router
