"""The HTTP edge's one table from error types to status codes, and its handlers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from contracts.http import ErrorDetail
from shared.errors import (
    ArtifactIntegrityError,
    ConfigError,
    Conflict,
    DependencyUnavailable,
    DriftloopError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)

STATUS_BY_ERROR: tuple[tuple[type[DriftloopError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (ArtifactIntegrityError, 409),
    (DependencyUnavailable, 503),
    (ConfigError, 500),
    (DriftloopError, 500),
)


def status_for(exc: DriftloopError) -> int:
    """The status code of an error, by the first matching type in the table."""
    return next(code for kind, code in STATUS_BY_ERROR if isinstance(exc, kind))


def json_response(content: Any, status: int = 200) -> Response:
    """A JSON response serialised by orjson (the hot path's encoder; FastAPI deprecated its
    ORJSONResponse class)."""
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def error_response(status: int, error: str, detail: str,
                   fields: list[tuple[str, str]] | None = None) -> Response:
    body = ErrorDetail(error=error, detail=detail,
                       fields=[{"field": f, "message": m} for f, m in fields or []])
    return json_response(body.model_dump(), status)


def install_error_handlers(app: FastAPI) -> None:
    """Map driftloop errors and request validation errors to ErrorDetail bodies."""

    async def on_driftloop_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DriftloopError)
        fields = exc.errors if isinstance(exc, InvalidInput) else None
        response = error_response(status_for(exc), type(exc).__name__, str(exc), fields)
        if isinstance(exc, Unauthenticated):  # RFC 6750: say which scheme would do
            response.headers["WWW-Authenticate"] = 'Bearer realm="driftloop"'
        return response

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields = [(".".join(str(p) for p in e["loc"] if p != "body"), str(e["msg"]))
                  for e in exc.errors()]
        detail = "; ".join(f"{f or 'body'}: {m}" for f, m in fields)
        return error_response(422, "InvalidRequest", detail, fields)

    app.add_exception_handler(DriftloopError, on_driftloop_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
