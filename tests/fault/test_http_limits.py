"""Oversized and hostile HTTP requests against the real services under uvicorn (issue 5,
finding 9): a body over the cap is refused with 413 before it is read, errors stay small
whatever was sent, integers the database cannot hold are client errors, and the services
answer normally afterwards."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from cli.platform import Platform
from contracts.http import ErrorDetail
from tests.fault.conftest import PlatformFactory

MODEL = "loans-tree"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def platform(platform_factory: PlatformFactory) -> Iterator[Platform]:
    yield platform_factory()


def announce_body(url: str, path: str, length: int) -> tuple[int, bytes]:
    """Send only the headers of a `length`-byte POST and read the answer: the server must
    answer without waiting for (or reading) the body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall((f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n")
                     .encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), body


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.mark.parametrize(("service", "path", "size"), [
    ("serving", f"/v1/models/{MODEL}/predict", 9 * MIB),
    ("registry", f"/v1/models/{MODEL}/promote", 2 * MIB),
    ("monitoring", "/v1/alerts", 2 * MIB),
])
def test_a_body_over_the_cap_is_413_before_it_is_read(platform: Platform, service: str,
                                                      path: str, size: int) -> None:
    status, body = announce_body(platform.url(service), path, size)
    assert status == 413
    error = ErrorDetail.model_validate_json(body)
    assert error.error == "RequestTooLarge" and len(body) < 1000


def test_a_chunked_body_over_the_cap_is_refused(platform: Platform) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):  # 2.5 MiB, over the registry's 1 MiB
            yield b" " * 65536

    try:
        response = httpx.post(f"{platform.url('registry')}/v1/models/{MODEL}/promote",
                              content=chunks(), headers={"content-type": "application/json"},
                              timeout=30)
    except httpx.TransportError:  # the server answered 413 and closed while we still sent
        return
    assert response.status_code == 413


def test_errors_stay_small_whatever_the_request(platform: Platform) -> None:
    serving = platform.url("serving")
    features = {f"f{i}": "x" * 50 for i in range(10_000)}  # ~700 KB of undeclared features
    response = httpx.post(f"{serving}/v1/models/{MODEL}/predict",
                          json={"features": features}, timeout=30)
    assert response.status_code == 422 and len(response.content) < 20_000
    assert "10009 problems" in ErrorDetail.model_validate(response.json()).detail  # + 9 missing
    huge_value = httpx.post(f"{serving}/v1/models/{MODEL}/predict",
                            json={"features": {"salary": "s" * 600_000}}, timeout=30)
    assert huge_value.status_code == 422 and len(huge_value.content) < 5_000


@pytest.mark.parametrize("version", [2**31, 2**63, 10**30])
def test_a_version_the_database_cannot_hold_is_a_client_error(platform: Platform,
                                                              version: int) -> None:
    response = httpx.get(f"{platform.url('registry')}/v1/models/{MODEL}/versions/{version}",
                         timeout=30)
    assert response.status_code == 422
    assert ErrorDetail.model_validate(response.json()).fields[0]["field"] == "path.version"


def test_every_service_still_answers(platform: Platform) -> None:
    for service in platform.ports:
        assert httpx.get(f"{platform.url(service)}/healthz", timeout=30).status_code == 200
