"""The Open Inference Protocol (V2) beside /v1: what KServe, Triton's clients and MLServer
speak, so a V2 client works against driftloop unmodified.

A model's inputs are its dataset's features, one named tensor each (a column, as MLServer's
pandas codec reads them): `shape` [n] or [n, 1], one value per row. Outputs: `prediction`
(the label's type) and `prediction_id` (BYTES, what feedback names). Inference goes through
the same predictor as /v1, so every V2 prediction is published as an event too. Tensor data
is JSON: the binary tensor extension is refused with a 422 that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from contracts.http import (
    V2InferRequest,
    V2InferResponse,
    V2ModelMetadata,
    V2ServerMetadata,
    V2Tensor,
    V2TensorMetadata,
)
from services.serving.calls import delivered, off_the_loop_if_large, parsed
from services.serving.handlers import Answer, Predictor
from shared.auth import Authenticator
from shared.errors import InvalidFeatures, ModelNotFound
from shared.http_errors import error_responses, json_response
from shared.project import ValueSpec, ValueType

DATATYPES = {ValueType.FLOAT: "FP64", ValueType.INT: "INT64", ValueType.STR: "BYTES",
             ValueType.BOOL: "BOOL"}
OUTPUTS = ("prediction", "prediction_id")
BINARY = ("binary tensor data is not accepted: send the data as JSON (tritonclient: "
          "set_data_from_numpy(..., binary_data=False))")


def datatype(spec: ValueSpec) -> str:
    return DATATYPES[spec.type]


def rows_of(request: V2InferRequest) -> list[dict[str, Any]]:
    """One instance per row, a feature per input tensor; `InvalidFeatures` names the input."""
    columns: dict[str, list[Any]] = {}
    count: int | None = None
    for index, tensor in enumerate(request.inputs):
        where = f"inputs.{index}"
        if tensor.parameters and "binary_data_size" in tensor.parameters:
            raise _bad(where, BINARY)
        if tensor.name in columns:
            raise _bad(f"{where}.name", f"input {tensor.name!r} is given twice")
        if len(tensor.shape) == 2 and tensor.shape[1] != 1:
            raise _bad(f"{where}.shape", f"shape {tensor.shape}: one column per feature, "
                       "[n] or [n, 1]")
        data = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in tensor.data]
        if tensor.shape[0] < 1 or len(data) != tensor.shape[0]:
            raise _bad(f"{where}.data", f"{len(data)} values for shape {tensor.shape}")
        if count is not None and tensor.shape[0] != count:
            raise _bad(f"{where}.shape", f"{tensor.shape[0]} rows where the first input has "
                       f"{count}")
        count = tensor.shape[0]
        columns[tensor.name] = data
    assert count is not None  # at least one input (the contract)
    return [{name: values[row] for name, values in columns.items()} for row in range(count)]


def _bad(field: str, message: str) -> InvalidFeatures:
    return InvalidFeatures(detail=f"{field}: {message}", errors=[(field, message)])


def build_v2_router(predictor: Predictor, auth: Authenticator,
                    ready: Callable[[], bool]) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["inference (V2)"])

    def served_version(model: str) -> int | None:
        predictor.project.model(model)  # ModelNotFound for an undeclared one
        loaded = next((m for m in predictor.models.loaded() if m.name == model), None)
        return None if loaded is None else loaded.version

    def check_version(model: str, version: str | None) -> int | None:
        serving = served_version(model)
        if version is not None and version != str(serving):
            raise ModelNotFound(model=f"{model} version {version}")
        return serving

    @router.get("", response_model=V2ServerMetadata, dependencies=auth.reads)
    async def server() -> V2ServerMetadata:
        """Server metadata."""
        return V2ServerMetadata(name="driftloop", version=_version(), extensions=[])

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        """200 while the process answers (always open, like /healthz)."""
        return {"live": True}

    @router.get("/health/ready", responses={503: {"description": "Not ready yet."}})
    async def server_ready() -> Response:
        """200 once serving is connected and following the registry; 503 before (always
        open, like /readyz)."""
        ok = ready()
        return json_response({"ready": ok}, 200 if ok else 503)

    @router.get("/models/{model}/ready", dependencies=auth.reads,
                responses={**error_responses(404, 422), 503: {"description": "Not loaded."}})
    async def model_ready(model: str) -> Response:
        """200 when a version of `model` is loaded and answers; 503 before its first."""
        ok = served_version(model) is not None
        return json_response({"name": model, "ready": ok}, 200 if ok else 503)

    @router.get("/models/{model}", response_model=V2ModelMetadata, dependencies=auth.reads,
                responses=error_responses(404, 422))
    @router.get("/models/{model}/versions/{version}", response_model=V2ModelMetadata,
                dependencies=auth.reads, responses=error_responses(404, 422))
    async def metadata(model: str, version: str | None = None) -> V2ModelMetadata:
        """One input per feature of the model's dataset; outputs `prediction` and
        `prediction_id`."""
        serving = check_version(model, version)
        spec = predictor.project.model(model)
        dataset = predictor.project.datasets[spec.dataset]
        return V2ModelMetadata(
            name=model, versions=[] if serving is None else [str(serving)],
            platform="driftloop-river",
            inputs=[V2TensorMetadata(name=name, datatype=datatype(feature), shape=[-1, 1])
                    for name, feature in dataset.features.items()],
            outputs=[V2TensorMetadata(name="prediction", datatype=datatype(dataset.label),
                                      shape=[-1, 1]),
                     V2TensorMetadata(name="prediction_id", datatype="BYTES", shape=[-1, 1])])

    infer_doc: dict[str, Any] = {"requestBody": {"content": {"application/json": {
        "schema": V2InferRequest.model_json_schema()}}, "required": True}}

    @router.post("/models/{model}/infer", response_model=V2InferResponse,
                 dependencies=auth.predict, openapi_extra=infer_doc,
                 responses=error_responses(404, 409, 413, 422, 503))
    @router.post("/models/{model}/versions/{version}/infer", response_model=V2InferResponse,
                 dependencies=auth.predict, openapi_extra=infer_doc,
                 responses=error_responses(404, 409, 413, 422, 503))
    async def infer(model: str, request: Request, version: str | None = None) -> Response:
        """Predict one row per input value with the champion, as /v1 does (and publish each
        prediction)."""
        check_version(model, version)
        if "inference-header-content-length" in request.headers:
            raise _bad("body", BINARY)
        body = await request.body()

        def answer_body() -> tuple[V2InferRequest, Answer]:
            call = parsed(V2InferRequest, body)
            for output in call.outputs or ():
                if output.name not in OUTPUTS:
                    raise _bad("outputs", f"no output {output.name!r}; outputs are "
                               f"{', '.join(OUTPUTS)}")
            rows = rows_of(call)
            return call, predictor.predict(model, rows,
                                           [f"inputs[row {i}]" for i in range(len(rows))])

        call, answer = await off_the_loop_if_large(predictor, body, answer_body)
        if (refused := await delivered(predictor, answer)) is not None:
            return refused
        wanted = [o.name for o in call.outputs] if call.outputs else list(OUTPUTS)
        count = len(answer.items)
        dataset = predictor.project.datasets[predictor.project.model(model).dataset]
        tensors = {
            "prediction": V2Tensor(name="prediction", datatype=datatype(dataset.label),
                                   shape=[count, 1],
                                   data=[item["prediction"] for item in answer.items]),
            "prediction_id": V2Tensor(name="prediction_id", datatype="BYTES",
                                      shape=[count, 1],
                                      data=[item["prediction_id"] for item in answer.items])}
        response = V2InferResponse(model_name=model, model_version=str(answer.served.version),
                                   id=call.id, outputs=[tensors[name] for name in wanted])
        return Response(orjson.dumps(response.model_dump(mode="json", exclude_none=True)),
                        media_type="application/json")

    return router


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("driftloop")
    except PackageNotFoundError:
        return "dev"
