"""Asking the registry for a model's champion (serving, training and monitoring do)."""

from __future__ import annotations

import httpx

from contracts.http import ModelVersionView
from shared.errors import DependencyUnavailable
from shared.tracing import current_traceparent


async def fetch_champion(registry_url: str, model: str,
                         timeout: float = 5.0) -> ModelVersionView | None:
    """The champion of `model`, None when it has none; DependencyUnavailable if unreachable."""
    url = f"{registry_url.rstrip('/')}/v1/models/{model}/champion"
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(url, headers={"traceparent": current_traceparent()})
    except httpx.HTTPError as exc:
        raise DependencyUnavailable(dependency="registry", detail=f"{url}: {exc}") from exc
    if response.status_code == 409:
        return None
    if response.status_code != 200:
        raise DependencyUnavailable(dependency="registry",
                                    detail=f"{url} answered {response.status_code}: "
                                           f"{response.text[:200]}")
    return ModelVersionView.model_validate_json(response.content)
