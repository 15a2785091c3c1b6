"""The registry's REST API: parse, call the handler, publish, answer.

Promote and rollback need an operator token and record its owner as the actor; reads are
open unless DRIFTLOOP_AUTH_OPEN_READS=false (then they need viewer).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from contracts.events import ModelLifecycleChanged
from contracts.http import AuditEntry, ModelVersionView, ModelView, PromoteRequest, RollbackRequest
from contracts.topics import Topic
from services.registry.handlers import Registry
from shared.auth import AUTH_RESPONSES, Principal, Role
from shared.errors import ModelNotReady
from shared.service import Runtime


def build_router(registry: Registry, runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["registry"], dependencies=runtime.auth.reads,
                       responses=AUTH_RESPONSES if runtime.auth.reads else None)
    operator = Depends(runtime.auth.require(Role.OPERATOR))

    async def publish(events: list[ModelLifecycleChanged]) -> None:
        for event in events:
            await runtime.bus.publish(Topic.MODELS_LIFECYCLE, event, key=event.model)

    @router.get("/models")
    def list_models() -> list[ModelView]:
        """Every declared model, with its champion and number of versions."""
        registered = {m: (champion, n) for m, champion, n in registry.store.models()}
        return [ModelView(model=name, champion_version=registered.get(name, (None, 0))[0],
                          versions=registered.get(name, (None, 0))[1])
                for name in registry.project.models]

    @router.get("/models/{model}/versions")
    def list_versions(model: str) -> list[ModelVersionView]:
        """Every version of a model, oldest first, with metrics and lineage."""
        registry.champion(model)  # 404 for undeclared models
        return registry.store.list_versions(model)

    @router.get("/models/{model}/versions/{version}")
    def get_version(model: str, version: int) -> ModelVersionView:
        """One version."""
        return registry.store.get(model, version)

    @router.get("/models/{model}/champion")
    def get_champion(model: str) -> ModelVersionView:
        """The version serving; 409 when there is none yet."""
        view = registry.champion(model)
        if view is None:
            raise ModelNotReady(model=model)
        return view

    @router.get("/models/{model}/lineage")
    def lineage(model: str) -> list[dict[str, object]]:
        """For each version: snapshot, pipeline, training request and the decision taken."""
        registry.champion(model)
        return [{"version": v.version, "stage": v.stage, "run_id": v.run_id,
                 "lineage": v.lineage.model_dump(mode="json"), "metrics": v.metrics,
                 "baseline_version": v.baseline_version, "decision": v.decision}
                for v in registry.store.list_versions(model)]

    @router.get("/models/{model}/audit")
    def audit_log(model: str) -> list[AuditEntry]:
        """Every lifecycle decision, oldest first: who, what, why."""
        registry.champion(model)
        return registry.store.audit_log(model)

    @router.post("/models/{model}/promote", responses=AUTH_RESPONSES)
    async def promote(model: str, body: PromoteRequest,
                      caller: Principal = operator) -> ModelVersionView:
        """Make a version champion by hand (operator; audited with the token's owner)."""
        events = await asyncio.to_thread(registry.promote, model, body.version, body.reason,
                                         caller.name)
        await publish(events)
        return registry.store.get(model, body.version)

    @router.post("/models/{model}/rollback", responses=AUTH_RESPONSES)
    async def rollback(model: str, body: RollbackRequest,
                       caller: Principal = operator) -> ModelVersionView:
        """Restore the previous champion (operator; audited with the token's owner)."""
        events = await asyncio.to_thread(registry.rollback, model, body.reason, caller.name)
        await publish(events)
        return registry.store.get(model, events[0].version)

    return router
