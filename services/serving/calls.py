"""What every inference route (/v1 predict, KServe v1 `:predict`, V2 infer) does alike: read
the body into its contract, predict off the event loop when the body is large, and queue
the prediction events — or refuse with 503 when the outbox is full."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from services.serving.handlers import Answer, Predictor
from shared.errors import InvalidFeatures
from shared.http_errors import error_response
from shared.outbox import OutboxFull
from shared.records import describe
from shared.validation import field_errors

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def invalid_body(exc: ValidationError) -> InvalidFeatures:
    """A body its contract refused, as the 422 that names each field."""
    problems = field_errors(exc)
    return InvalidFeatures(detail=describe(problems), errors=problems)


def parsed(contract: type[M], body: bytes) -> M:
    """`body` as `contract`, or `InvalidFeatures` naming the fields."""
    try:
        return contract.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc) from None


async def off_the_loop_if_large(predictor: Predictor, body: bytes, work: Callable[[], T]) -> T:
    """`work()` here for a small body; in a worker thread for a large one, whose parsing and
    prediction would stall every other request (the GIL is handed back every few ms)."""
    if len(body) > predictor.inline_body_bytes:
        return await asyncio.to_thread(work)
    return work()


async def delivered(predictor: Predictor, answer: Answer) -> Response | None:
    """None once the answer's events are queued; a 503 with Retry-After when the outbox is
    full (nothing is answered that could not be published)."""
    try:
        await predictor.deliver(answer.events)
    except OutboxFull as exc:
        refused = error_response(503, type(exc).__name__, str(exc))
        refused.headers["Retry-After"] = "1"
        return refused
    return None
