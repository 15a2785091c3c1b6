"""The registry's REST API: parse, call the handler, wake the outbox publisher, answer.

Promote and rollback need an operator token and record its owner as the actor; reads are
open unless DRIFTLOOP_AUTH_OPEN_READS=false (then they need viewer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path

from contracts.events import MAX_VERSION
from contracts.http import (
    AuditEntry,
    ModelVersionView,
    ModelView,
    PromoteRequest,
    RollbackRequest,
)
from services.registry.handlers import Registry
from shared.auth import Principal, Role
from shared.errors import ModelNotReady
from shared.http_errors import error_responses
from shared.service import Runtime

ModelName = Annotated[str, Path(examples=["loans-tree"])]
"""Any name: only the project's declared models exist, every other name is a 404."""
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION, examples=[1])]
"""Bounded as the database stores it: a larger number is a 422, never a database error."""


def build_router(registry: Registry, runtime: Runtime,
                 notify: Callable[[], None]) -> APIRouter:
    """The API; `notify` wakes the outbox publisher after a decision was committed."""
    router = APIRouter(prefix="/v1", tags=["registry"], dependencies=runtime.auth.reads,
                       responses=error_responses(*((401, 403) if runtime.auth.reads else ()),
                                                 404, 422, 503))
    operator = Depends(runtime.auth.require(Role.OPERATOR))

    @router.get("/models")
    def list_models() -> list[ModelView]:
        """Every declared model, with its champion and number of versions."""
        registered = {m: (champion, n) for m, champion, n in registry.store.models()}
        return [ModelView(model=name, champion_version=registered.get(name, (None, 0))[0],
                          versions=registered.get(name, (None, 0))[1])
                for name in registry.project.models]

    @router.get("/models/{model}/versions")
    def list_versions(model: ModelName) -> list[ModelVersionView]:
        """Every version of a model, oldest first, with metrics and lineage."""
        registry.champion(model)  # 404 for undeclared models
        return registry.store.list_versions(model)

    @router.get("/models/{model}/versions/{version}")
    def get_version(model: ModelName, version: VersionNumber) -> ModelVersionView:
        """One version."""
        return registry.store.get(model, version)

    @router.get("/models/{model}/champion", responses=error_responses(409))
    def get_champion(model: ModelName) -> ModelVersionView:
        """The version serving; 409 when there is none yet."""
        view = registry.champion(model)
        if view is None:
            raise ModelNotReady(model=model)
        return view

    @router.get("/models/{model}/lineage")
    def lineage(model: ModelName) -> list[dict[str, object]]:
        """For each version: snapshot, pipeline, training request and the decision taken."""
        registry.champion(model)
        return [{"version": v.version, "stage": v.stage, "run_id": v.run_id,
                 "lineage": v.lineage.model_dump(mode="json"), "metrics": v.metrics,
                 "baseline_version": v.baseline_version, "decision": v.decision}
                for v in registry.store.list_versions(model)]

    @router.get("/models/{model}/audit")
    def audit_log(model: ModelName) -> list[AuditEntry]:
        """Every lifecycle decision, oldest first: who, what, why."""
        registry.champion(model)
        return registry.store.audit_log(model)

    @router.post("/models/{model}/promote", responses=error_responses(401, 403, 409))
    async def promote(model: ModelName, body: PromoteRequest,
                      caller: Principal = operator) -> ModelVersionView:
        """Make a version champion by hand (operator; audited with the token's owner; its
        event is published by the outbox)."""
        await asyncio.to_thread(registry.promote, model, body.version, body.reason,
                                caller.name)
        notify()
        return registry.store.get(model, body.version)

    @router.post("/models/{model}/rollback", responses=error_responses(401, 403, 409))
    async def rollback(model: ModelName, body: RollbackRequest,
                       caller: Principal = operator) -> ModelVersionView:
        """Restore the previous champion (operator; audited with the token's owner; its event
        is published by the outbox)."""
        events = await asyncio.to_thread(registry.rollback, model, body.reason, caller.name)
        notify()
        return registry.store.get(model, events[0].version)

    return router
