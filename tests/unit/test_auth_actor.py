"""The audit log's actor is the bearer token's owner, never a field of the body; an anonymous
promote is refused. (Written first: on the code before auth, the anonymous promote of a
rejected version answered 200 and the audit said "alice".)"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from contracts.base import Contract
from services.registry.app import create_app
from services.registry.handlers import Registry
from services.registry.settings import RegistrySettings
from services.registry.store import RegistryStore
from shared.bus import Bus
from tests.unit.factories import (
    PROJECT_FILE,
    REGISTRY_KEY,
    TRAINING_KEY,
    demo_project,
    model_trained,
)

MODEL = "loans-tree"
BASE = f"/v1/models/{MODEL}"
OPERATOR_TOKEN = "dl_test-operator-token-0123456789abcdef"


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
async def client(tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    async def publish(self: Bus, topic: object, event: Contract, key: str,
                      *args: object, **kwargs: object) -> None:
        return None  # no Kafka in a route test: the decision is in the database

    monkeypatch.setattr(Bus, "publish", publish)
    settings = RegistrySettings(config=PROJECT_FILE, data_dir=tmp_path, auth_tokens=[
        {"name": "bob", "role": "operator", "sha256": sha256(OPERATOR_TOKEN)}])
    store = RegistryStore(settings.resolved_database_url())
    try:  # v1 champion, v2 rejected (not better than v1)
        registry = Registry(demo_project(), store, REGISTRY_KEY, TRAINING_KEY.verifier())
        registry.record(model_trained("run-1", 0.80))
        registry.record(model_trained("run-2", 0.70, baseline_version=1, baseline_accuracy=0.80))
    finally:
        store.close()
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://registry") as http:
        yield http


async def test_anonymous_promote_of_a_rejected_version_is_refused(
        client: httpx.AsyncClient) -> None:
    response = await client.post(f"{BASE}/promote",
                                 json={"version": 2, "reason": "trust me", "actor": "alice"})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "Unauthenticated"
    champion = (await client.get(f"{BASE}/champion")).json()
    assert champion["version"] == 1, "the refused call changed the champion"
    assert [e["actor"] for e in (await client.get(f"{BASE}/audit")).json()] == [
        "policy", "policy"]


async def test_the_audit_actor_is_the_tokens_owner_not_the_body(
        client: httpx.AsyncClient) -> None:
    response = await client.post(f"{BASE}/promote",
                                 json={"version": 2, "reason": "reviewed", "actor": "alice"},
                                 headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert response.status_code == 200, response.text
    audit = (await client.get(f"{BASE}/audit")).json()
    assert [(e["version"], e["action"], e["actor"]) for e in audit[-2:]] == [
        (2, "promoted", "bob"), (1, "archived", "bob")]
    response = await client.post(f"{BASE}/rollback", json={"reason": "no", "actor": "alice"},
                                 headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert response.status_code == 200, response.text
    audit = (await client.get(f"{BASE}/audit")).json()
    assert [(e["version"], e["action"], e["actor"]) for e in audit[-2:]] == [
        (1, "rolled_back", "bob"), (2, "archived", "bob")]
