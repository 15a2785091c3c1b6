"""The HTTP edge's one table from error types to status codes, its handlers, and the error
responses every route declares in the OpenAPI document.

Every error body is an `ErrorDetail`, bounded whatever the input: a request never gets back
more than a few kilobytes of error, however large or wrong it was (the request's values are
never echoed whole).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from contracts.http import MAX_ERROR_DETAIL, MAX_ERROR_FIELDS, MAX_ERROR_TEXT, ErrorDetail
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

_MEANINGS = {
    400: "The request is malformed (an invalid Content-Length, say).",
    401: "No valid bearer token was sent.",
    403: "The token's role may not do this.",
    404: "The model, version or path does not exist.",
    409: "The request is valid but the current state does not allow it.",
    413: "The request body is larger than this service accepts "
         "(DRIFTLOOP_MAX_REQUEST_BYTES, DRIFTLOOP_SERVING_MAX_REQUEST_BYTES for serving).",
    422: "The request does not match its schema or the model's features.",
    500: "An unexpected error in the service.",
    503: "A dependency (Kafka, the database) is unavailable; retry later.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorDetail, "description": meaning} for status, meaning in _MEANINGS.items()
}
"""Every error status a driftloop service answers, each with the ErrorDetail body; routes
declare the ones they can answer with `error_responses(...)`."""

EDGE_ERRORS = (400, 413, 500)
"""What any request may get, whatever its route: declared once for the whole app."""


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` declaration of a route or router that can answer `statuses`."""
    return {status: ERROR_RESPONSES[status] for status in statuses}


class RequestRefused(HTTPException):
    """Raised by the edge's own checks (body size) with the error name to answer."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(status, detail)
        self.error = error


def status_for(exc: DriftloopError) -> int:
    """The status code of an error, by the first matching type in the table."""
    return next(code for kind, code in STATUS_BY_ERROR if isinstance(exc, kind))


def json_response(content: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised by orjson (the hot path's encoder; FastAPI deprecated its
    ORJSONResponse class)."""
    return Response(orjson.dumps(content), status_code=status, media_type="application/json",
                    headers=headers)


def cut(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """`text`, or its start and how long it was when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    return f"{text[:limit - 40]}... ({len(text)} characters)"


def error_body(error: str, detail: str,
               fields: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """An ErrorDetail as a dict, bounded: the first few problems, each cut short."""
    problems = fields or []
    listed = [(cut(field), cut(message)) for field, message in problems[:MAX_ERROR_FIELDS]]
    if len(problems) > len(listed):
        detail = (f"{len(problems)} problems; the first {len(listed)}: "
                  + "; ".join(f"{field or 'body'}: {message}" for field, message in listed))
    return {"error": cut(error, 100), "detail": cut(detail, MAX_ERROR_DETAIL),
            "fields": [{"field": field, "message": message} for field, message in listed]}


def error_response(status: int, error: str, detail: str,
                   fields: list[tuple[str, str]] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return json_response(error_body(error, detail, fields), status, headers)


def _error_word(request: Request, exc: Exception, detail: str) -> str:
    """The body's `error`: the error's name, except on the V2 inference protocol, whose
    clients show only `error` (its spec: `{"error": "<message>"}`), so there it is the
    message itself."""
    if request.url.path.startswith("/v2/") and detail:
        return cut(detail)
    return type(exc).__name__


def install_error_handlers(app: FastAPI) -> None:
    """Map driftloop errors, request validation errors and Starlette's HTTP errors (unknown
    path, method not allowed, the body cap) to ErrorDetail bodies; a client that left
    mid-body gets a bare 499, not a logged traceback."""

    async def on_driftloop_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DriftloopError)
        fields = exc.errors if isinstance(exc, InvalidInput) else None
        if fields and len(fields) > MAX_ERROR_FIELDS:  # do not build a message of all of them
            detail = ""
        else:
            detail = str(exc)
        response = error_response(status_for(exc), _error_word(request, exc, detail), detail,
                                  fields)
        if isinstance(exc, Unauthenticated):  # RFC 6750: say which scheme would do
            response.headers["WWW-Authenticate"] = 'Bearer realm="driftloop"'
        return response

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Only the location and message of each error: pydantic's `input` would echo the
        # request's values back, however large.
        fields = [(".".join(str(p) for p in e["loc"] if p != "body"), str(e["msg"]))
                  for e in exc.errors()]
        detail = "; ".join(f"{cut(f) or 'body'}: {cut(m)}" for f, m in fields[:MAX_ERROR_FIELDS])
        return error_response(422, "InvalidRequest", detail, fields)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if isinstance(exc, RequestRefused):
            error = exc.error
        else:
            try:
                error = "".join(HTTPStatus(exc.status_code).phrase.split())
            except ValueError:
                error = "HTTPError"
        return error_response(exc.status_code, error, str(exc.detail),
                              headers=dict(exc.headers) if exc.headers else None)

    async def on_client_gone(request: Request, exc: Exception) -> Response:
        # The client left while its body was read (it gave up under load): nothing to answer
        # and no bug to log. 499 is nginx's "client closed request", for the access log.
        return Response(status_code=499)

    app.add_exception_handler(DriftloopError, on_driftloop_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
