"""Training's HTTP API: a manual training request, which needs an operator token.

The request is published on training.requests like any other and runs through the same
consumer; what HTTP adds is who asked (the token's owner, as `requested_by`) and an
immediate 404 for a model the project does not declare.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from contracts.events import DataWindow, TrainingReason, TrainingRequested
from contracts.http import TrainAccepted, TrainRequest
from contracts.topics import Topic
from shared.auth import Principal, Role
from shared.http_errors import error_responses
from shared.project import Project
from shared.service import Runtime


def build_router(project: Project, runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["training"], responses=error_responses(404, 422, 503))
    operator = Depends(runtime.auth.require(Role.OPERATOR))

    @router.post("/models/{model}/train", status_code=202,
                 responses=error_responses(401, 403))
    async def train(model: str, body: TrainRequest,
                    caller: Principal = operator) -> TrainAccepted:
        """Queue a training run of `model` (operator; `requested_by` is the token's owner)."""
        project.model(model)  # an undeclared model is refused now, not after a wait
        request = TrainingRequested(
            request_id=f"manual-{uuid.uuid4().hex[:12]}", model=model,
            reason=TrainingReason.MANUAL, window=DataWindow(last=body.last),
            evidence={"reason": body.reason} if body.reason else {}, requested_by=caller.name)
        await runtime.bus.publish(Topic.TRAINING_REQUESTS, request, key=model)
        return TrainAccepted(request_id=request.request_id, model=model,
                             requested_by=caller.name)

    return router
