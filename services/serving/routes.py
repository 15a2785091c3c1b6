"""The inference API: parse the raw body, call the predictor, answer with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from contracts.http import (
    BatchPredictRequest,
    BatchPredictResponse,
    PredictRequest,
    PredictResponse,
)
from services.serving.handlers import Predictor
from shared.errors import InvalidFeatures
from shared.http_errors import error_responses, json_response
from shared.records import describe
from shared.validation import field_errors


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
        problems = field_errors(exc)
        raise InvalidFeatures(detail=describe(problems), errors=problems) from None


def build_router(predictor: Predictor) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["inference"])

    @router.post("/models/{model}/predict", response_model=PredictResponse | BatchPredictResponse,
                 responses=error_responses(401, 403, 404, 409, 422),
                 openapi_extra={"requestBody": {"content": {"application/json": {"schema": {
                     "oneOf": [PredictRequest.model_json_schema(),
                               BatchPredictRequest.model_json_schema()]}}}, "required": True}})
    async def predict(model: str, request: Request) -> Response:
        """Predict one instance (`features`) or many (`instances`) with the champion."""
        instances, paths, is_batch = _parse(await request.body())
        served, items = predictor.predict(model, instances, paths)
        body: PredictResponse | BatchPredictResponse
        if is_batch:
            body = BatchPredictResponse(model=model, version=served.version, predictions=items)
        else:
            item = items[0]
            body = PredictResponse(model=model, version=served.version,
                                   prediction=item.prediction, probabilities=item.probabilities,
                                   prediction_id=item.prediction_id)
        return json_response(body.model_dump())

    @router.get("/models")
    async def loaded() -> list[dict[str, Any]]:
        """The versions being served."""
        return [{"model": m.name, "version": m.version, "digest": m.digest,
                 "loaded_at": m.loaded_at.isoformat()} for m in predictor.models.loaded()]

    return router
