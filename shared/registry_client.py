"""Asking the registry for a model's champion (serving, training and monitoring do).

When the registry's reads are closed (DRIFTLOOP_AUTH_OPEN_READS=false) the services present
a token: `present_token` is called once per process at start (shared/service.py) with the
process's own (DRIFTLOOP_TOKEN, a viewer token is enough; or the local admin token of
`driftloop up`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable

import httpx

from contracts.http import ModelVersionView
from shared.errors import DependencyUnavailable
from shared.tracing import current_traceparent

logger = logging.getLogger(__name__)

_auth_headers: dict[str, str] = {}


def present_token(headers: dict[str, str]) -> None:
    """Send these Authorization headers on every registry call of this process."""
    _auth_headers.clear()
    _auth_headers.update(headers)


async def fetch_champion(registry_url: str, model: str,
                         timeout: float = 5.0) -> ModelVersionView | None:
    """The champion of `model`, None when it has none; DependencyUnavailable if unreachable."""
    return await _fetch_view(f"{registry_url.rstrip('/')}/v1/models/{model}/champion", timeout)


async def fetch_version(registry_url: str, model: str, version: int,
                        timeout: float = 5.0) -> ModelVersionView | None:
    """Version `version` of `model` with its lineage, None when the registry has no such
    version; DependencyUnavailable if unreachable."""
    return await _fetch_view(f"{registry_url.rstrip('/')}/v1/models/{model}/versions/{version}",
                             timeout)


async def _fetch_view(url: str, timeout: float) -> ModelVersionView | None:
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url, headers={"traceparent": current_traceparent(),
                                                      **_auth_headers})
    except httpx.HTTPError as exc:
        raise DependencyUnavailable(dependency="registry", detail=f"{url}: {exc}") from exc
    if response.status_code == 409:
        return None
    if response.status_code in (401, 403):  # retried, and said: a setting to fix, not a crash
        raise DependencyUnavailable(dependency="registry", detail=f"{url} refused this "
                                    f"service's token ({response.status_code}): set "
                                    "DRIFTLOOP_TOKEN to a viewer token the registry accepts")
    if response.status_code == 404:
        # Not declared, or no such version: retrying cannot help.
        logger.error("the registry has no %s: %s", url.rsplit("/v1/", 1)[-1],
                     response.text[:200])
        return None
    if response.status_code != 200:
        raise DependencyUnavailable(dependency="registry",
                                    detail=f"{url} answered {response.status_code}: "
                                           f"{response.text[:200]}")
    return ModelVersionView.model_validate_json(response.content)


async def fetch_champions_when_reachable(
        registry_url: str, models: Iterable[str], stopping: asyncio.Event,
        retry_seconds: float = 1.0) -> AsyncIterator[tuple[str, ModelVersionView | None]]:
    """Each model's champion (or None), retrying while the registry is unreachable, until
    every model has been answered or `stopping` is set. Used at start-up by the services
    that must know what serves."""
    pending = sorted(set(models))
    while pending and not stopping.is_set():
        model = pending[0]
        try:
            champion = await fetch_champion(registry_url, model)
        except DependencyUnavailable as exc:
            logger.warning("cannot ask the registry for %s yet: %s", model, exc)
            await asyncio.sleep(retry_seconds)
            continue
        pending.pop(0)
        yield model, champion
