"""POST /v1/feedback: the observed label of a prediction, named by its id alone.

Serving answered the prediction and published its features, so the id is all a caller
needs to send (Seldon Core's `/feedback` asks for the same). Each item is published to the
feedback topic, keyed by the prediction id like the prediction itself, and 202 is answered
once every item is acknowledged by the broker: nothing accepted is lost. Monitoring joins it
with the prediction (scoring the version that answered and completing the record for the
dataset) and dead-letters feedback whose prediction it never sees within the label TTL.

The label is checked here only against what some declared model could take (the id does
not say which model answered): a label no dataset declares is refused at once with 422; one
of the wrong type for the model that answered is dead-lettered by ingestion with its reason.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from contracts.events import Feedback
from contracts.http import FeedbackAccepted, FeedbackItem
from contracts.topics import Topic
from shared.auth import Authenticator
from shared.bus import Bus
from shared.errors import InvalidFeedback
from shared.http_errors import error_responses, json_response
from shared.project import Project
from shared.records import check_value, describe
from shared.validation import field_errors

MAX_ITEMS = 1000
"""Feedback items in one request."""

_ITEMS = TypeAdapter(FeedbackItem | list[FeedbackItem])


def parse(body: bytes, project: Project) -> list[FeedbackItem]:
    """The items of a body (one object or a list), or InvalidFeedback naming each field."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidFeedback(detail=f"body is not valid JSON: {exc}",
                              errors=[("body", "not valid JSON")]) from None
    try:
        parsed = _ITEMS.validate_python(data)
    except ValidationError as exc:
        problems = field_errors(exc)
        raise InvalidFeedback(detail=describe(problems), errors=problems) from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items or len(items) > MAX_ITEMS:
        raise InvalidFeedback(detail=f"send 1 to {MAX_ITEMS} items, not {len(items)}",
                              errors=[("body", f"1 to {MAX_ITEMS} items")])
    labels = [project.datasets[spec.dataset].label for spec in project.models.values()]
    wrong: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        path = f"{index}.label" if isinstance(parsed, list) else "label"
        tried: list[tuple[str, str]] = []
        for spec in labels:
            attempt: list[tuple[str, str]] = []
            check_value(path, item.label, spec, attempt)
            if not attempt:
                break
            tried = attempt
        else:
            wrong += tried[:1] or [(path, "no declared model takes this label")]
    if wrong:
        raise InvalidFeedback(detail=describe(wrong), errors=wrong)
    return items


def feedback_id(item: FeedbackItem) -> str:
    """The event id: the same feedback sent twice (a client's retry) is one event."""
    said = orjson.dumps([item.prediction_id, item.label])
    return "feedback/" + hashlib.sha256(said).hexdigest()[:32]


def build_router(bus: Bus, project: Project, auth: Authenticator | None = None) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["inference"])
    auth = auth or Authenticator([])

    @router.post("/feedback", status_code=202, response_model=FeedbackAccepted,
                 dependencies=auth.predict, responses=error_responses(401, 403, 422, 503),
                 openapi_extra={"requestBody": {"content": {"application/json": {"schema": {
                     "oneOf": [FeedbackItem.model_json_schema(),
                               {"type": "array", "items": FeedbackItem.model_json_schema(),
                                "maxItems": MAX_ITEMS}]}}}, "required": True}})
    async def feedback(request: Request) -> Response:
        """The observed label of one prediction (`{"prediction_id", "label"}`) or of many
        (a list of them); 202 once every item is durably published."""
        items = parse(await request.body(), project)
        await asyncio.gather(*(
            bus.publish(Topic.FEEDBACK, Feedback(prediction_id=item.prediction_id,
                                                 label=item.label, source="http"),
                        key=item.prediction_id, ce_id=feedback_id(item))
            for item in items))
        return json_response({"accepted": len(items)}, status=202)

    return router
