"""The HTTP door of the real platform, called from loopback as any local process (or a browser
page) could: every state-changing endpoint of every service refuses anonymous, forged and
under-privileged calls and changes nothing; the local admin token that the platform wrote to
its data directory works, from curl-like calls and from the CLI without any setup; the audit
log and the training request name the token's owner, whatever the body says; no token is
ever written to a log."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli.kafka_io import follower, producer, send_all
from cli.main import app as cli
from cli.platform import Platform
from contracts.events import LabeledRecord, TrainingRequested
from contracts.http import ErrorDetail
from contracts.topics import Topic
from shared.tokens import admin_token_path, digest
from tests.fault.conftest import PlatformFactory
from tests.unit.factories import agrawal

MODEL = "loans-tree"
TOKENS = {"viewer": "dl_fault-viewer-token-0123456789abcdef012345",
          "operator": "dl_fault-operator-token-0123456789abcdef0123"}
OWNERS = {"viewer": "vera", "operator": "otto"}
SERVICES = ("ingestion", "training", "registry", "serving", "monitoring")
BODIES: dict[str, dict[str, Any]] = {
    f"/v1/models/{MODEL}/promote": {"version": 1, "reason": "trust me", "actor": "alice"},
    f"/v1/models/{MODEL}/rollback": {"reason": "trust me", "actor": "alice"},
    f"/v1/models/{MODEL}/train": {"last": 50},
}
KNOWN = {("registry", "/v1/models/{model}/promote"), ("registry", "/v1/models/{model}/rollback"),
         ("training", "/v1/models/{model}/train")}
PREDICT = "/v1/models/{model}/predict"
FEEDBACK = "/v1/feedback"
"""Open by the same setting as predict (DRIFTLOOP_AUTH_OPEN_PREDICT): an answer's label."""
INFERENCE = (PREDICT, FEEDBACK, "/v1/models/{model}:predict", "/v2/models/{model}/infer",
             "/v2/models/{model}/versions/{version}/infer")
"""Answers (the V2 and KServe v1 protocols too) and labels: open by that setting."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def platform(platform_factory: PlatformFactory) -> Platform:
    entries = [{"name": OWNERS[role], "role": role, "sha256": digest(token)}
               for role, token in TOKENS.items()]
    return platform_factory(env={"DRIFTLOOP_AUTH_TOKENS": json.dumps(entries)})


def mutating_endpoints(platform: Platform) -> set[tuple[str, str]]:
    """Every state-changing endpoint, read from each live service's OpenAPI document."""
    found = set()
    for service in SERVICES:
        spec = httpx.get(f"{platform.url(service)}/openapi.json", timeout=10).json()
        found |= {(service, path) for path, item in spec["paths"].items()
                  for method in item if method in ("post", "put", "patch", "delete")
                  and path not in INFERENCE}
    return found


def audit(platform: Platform) -> list[dict[str, Any]]:
    response = httpx.get(f"{platform.url('registry')}/v1/models/{MODEL}/audit", timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json())


def versions(platform: Platform) -> list[dict[str, Any]]:
    url = f"{platform.url('registry')}/v1/models/{MODEL}/versions"
    return list(httpx.get(url, timeout=10).json())


def wait_for_versions(platform: Platform, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while len(versions(platform)) < count:
        assert time.monotonic() < deadline, f"no v{count} after {timeout:.0f}s"
        time.sleep(0.5)


async def training_requests(bootstrap: str, seconds: float = 2.0) -> list[TrainingRequested]:
    found = []
    async with follower(bootstrap, [Topic.TRAINING_REQUESTS]) as consumer:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                found += [TrainingRequested.model_validate_json(m.value) for m in messages]
    return found


async def produce_and_wait_validated(bootstrap: str, n: int, timeout: float = 60.0) -> None:
    records = [(f"auth-{i}", LabeledRecord(dataset="loans", record_id=f"auth-{i}",
                                           features=x, label=y))
               for i, (x, y) in enumerate(agrawal(n, seed=11))]
    async with producer(bootstrap) as client:
        await send_all(client, Topic.DATA_LABELED.value, records)
    seen = 0
    async with follower(bootstrap, [Topic.DATA_VALIDATED]) as consumer:
        deadline = time.monotonic() + timeout
        while seen < n:
            assert time.monotonic() < deadline, f"{seen} of {n} records validated"
            seen += sum(len(m) for m in (await consumer.getmany(timeout_ms=300)).values())


def test_every_mutating_endpoint_refuses_anonymous_forged_and_weak_calls(
        platform: Platform) -> None:
    endpoints = mutating_endpoints(platform)
    assert endpoints == KNOWN, "a state-changing endpoint is missing from this test"
    refusals = {"anonymous": ({}, 401), "forged": (bearer("dl_forged-token"), 401),
                "basic": ({"Authorization": "Basic YWxpY2U6YWxpY2U="}, 401),
                "viewer": (bearer(TOKENS["viewer"]), 403)}
    for service, template in sorted(endpoints):
        path = template.replace("{model}", MODEL)
        for who, (headers, status) in refusals.items():
            response = httpx.post(f"{platform.url(service)}{path}", json=BODIES[path],
                                  headers=headers, timeout=10)
            assert response.status_code == status, (service, path, who, response.text)
            error = ErrorDetail.model_validate(response.json())
            assert error.error == ("Forbidden" if status == 403 else "Unauthenticated")
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
            else:
                assert "vera" in error.detail and "operator" in error.detail
    # ... and nothing changed: no decision, no version, no training request.
    assert audit(platform) == [] and versions(platform) == []
    assert platform.bootstrap is not None
    assert asyncio.run(training_requests(platform.bootstrap)) == []


def test_reads_and_predict_stay_open_by_default(platform: Platform) -> None:
    assert httpx.get(f"{platform.url('registry')}/v1/models", timeout=10).status_code == 200
    assert httpx.get(f"{platform.url('monitoring')}/v1/alerts", timeout=10).status_code == 200
    response = httpx.post(f"{platform.url('serving')}/v1/models/{MODEL}/predict",
                          json={"features": {}}, timeout=10)
    assert response.status_code not in (401, 403)  # 409 or 422: no champion, no features
    feedback = httpx.post(f"{platform.url('serving')}{FEEDBACK}",
                          json={"prediction_id": "p-1", "label": 1}, timeout=10)
    assert feedback.status_code == 202, feedback.text


def test_the_local_admin_token_works_and_every_actor_is_the_tokens_owner(
        platform: Platform) -> None:
    assert platform.bootstrap is not None
    token_file = admin_token_path(platform.data_dir)
    assert token_file.stat().st_mode & 0o077 == 0, "the admin token is readable by others"
    asyncio.run(produce_and_wait_validated(platform.bootstrap, 200))
    env = {"DRIFTLOOP_DATA_DIR": str(platform.data_dir), "DRIFTLOOP_TOKEN": None,
           "DRIFTLOOP_REGISTRY_URL": platform.url("registry"),
           "DRIFTLOOP_TRAINING_PORT": str(platform.ports["training"]),
           "DRIFTLOOP_HOST": platform.host}
    runner = CliRunner()

    # v1: the CLI with no token given finds the local admin token in the data dir by itself.
    result = runner.invoke(cli, ["train", MODEL, "--last", "150"], env=env)
    assert result.exit_code == 0 and "as local-admin" in result.output, result.output
    wait_for_versions(platform, 1)
    # v2: an operator over HTTP; the body cannot name anyone.
    response = httpx.post(f"{platform.url('training')}/v1/models/{MODEL}/train",
                          json={"last": 200}, headers=bearer(TOKENS["operator"]), timeout=10)
    assert response.status_code == 202 and response.json()["requested_by"] == "otto"
    wait_for_versions(platform, 2)
    requested_by = {r.request_id: r.requested_by
                    for r in asyncio.run(training_requests(platform.bootstrap))}
    assert sorted(requested_by.values()) == ["local-admin", "otto"], requested_by

    # The admin (by the CLI) and the operator (by curl, with a body naming alice) act in turn.
    v2_champion = versions(platform)[1]["stage"] == "champion"
    first = ["rollback", MODEL, "--reason", "fault test"] if v2_champion else [
        "promote", MODEL, "2", "--reason", "fault test"]
    result = runner.invoke(cli, first, env=env)
    assert result.exit_code == 0, result.output
    second = "promote" if v2_champion else "rollback"
    body = BODIES[f"/v1/models/{MODEL}/{second}"] | ({"version": 2} if v2_champion else {})
    response = httpx.post(f"{platform.url('registry')}/v1/models/{MODEL}/{second}", json=body,
                          headers=bearer(TOKENS["operator"]), timeout=10)
    assert response.status_code == 200, response.text
    manual = [e for e in audit(platform) if e["actor"] != "policy"]
    assert [e["actor"] for e in manual] == ["local-admin", "local-admin", "otto", "otto"], manual

    # Whatever was refused or accepted, no token reached a log line.
    logs = "".join(path.read_text(encoding="utf-8", errors="replace")
                   for path in (platform.data_dir / "logs").glob("*.log"))
    assert "refused POST" in logs
    for secret in (*TOKENS.values(), token_file.read_text().strip()):
        assert secret not in logs


def test_closed_reads_need_a_viewer_and_the_services_still_read_the_registry(
        platform_factory: PlatformFactory) -> None:
    """With reads and predict closed, serving and monitoring must present a token to read the
    registry's champions: the platform only becomes ready if they do."""
    entries = [{"name": OWNERS[role], "role": role, "sha256": digest(token)}
               for role, token in TOKENS.items()]
    closed = platform_factory(env={"DRIFTLOOP_AUTH_TOKENS": json.dumps(entries),
                                   "DRIFTLOOP_AUTH_OPEN_READS": "false",
                                   "DRIFTLOOP_AUTH_OPEN_PREDICT": "false"})
    reads = [("GET", "registry", "/v1/models"), ("GET", "registry", f"/v1/models/{MODEL}/audit"),
             ("GET", "monitoring", "/v1/alerts"), ("GET", "serving", "/v1/models"),
             ("GET", "ingestion", "/metrics"), ("POST", "serving", f"/v1/models/{MODEL}/predict"),
             ("POST", "serving", FEEDBACK)]
    for method, service, path in reads:
        url = f"{closed.url(service)}{path}"
        anonymous = httpx.request(method, url, json={"features": {}}, timeout=10)
        assert anonymous.status_code == 401, (service, path, anonymous.text)
        viewer = httpx.request(method, url, json={"features": {}},
                               headers=bearer(TOKENS["viewer"]), timeout=10)
        assert viewer.status_code not in (401, 403), (service, path, viewer.text)
    for service in SERVICES:
        assert httpx.get(f"{closed.url(service)}/healthz", timeout=10).status_code == 200
