"""Answered predictions are on the predictions topic: after a SIGTERM of serving, all of
them; after a kill -9 under load, all of them in "acked" mode and all but at most the
documented window in "fast" mode.

One platform (broker, registry, training, …) trains the model; each test starts its own
serving process beside it, loads it with concurrent clients, signals it by PID, and counts
the events by reading the topic (the embedded broker's end offsets count batches)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from river.datasets import synth

from cli.kafka_io import follower, producer, send_all
from cli.platform import Platform
from contracts.events import LabeledRecord
from contracts.topics import Topic
from shared.broker import free_port
from shared.processes import terminate
from tests.fault.conftest import PlatformFactory

MODEL = "loans-tree"
ROWS = [x for x, _ in synth.Agrawal(seed=7).take(64)]
CAPACITY = 100  # fast mode's pending bound in these tests
BATCH = 32


@pytest.fixture(scope="module")
def platform(platform_factory: PlatformFactory) -> Platform:
    """A platform whose registry has a champion for MODEL."""
    running = platform_factory()
    assert running.bootstrap is not None
    records = [LabeledRecord(dataset="loans", record_id=f"r{i}", features=x, label=int(y))
               for i, (x, y) in enumerate(synth.Agrawal(seed=1).take(2_000))]

    async def publish() -> None:
        async with producer(str(running.bootstrap)) as kafka:
            await send_all(kafka, Topic.DATA_LABELED.value,
                           [(r.record_id, r) for r in records], "fault-test")

    asyncio.run(publish())
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=running.url("registry"), timeout=5) as registry:
        while time.monotonic() < deadline:
            if registry.get(f"/v1/models/{MODEL}/champion").status_code == 200:
                return running
            time.sleep(0.5)
    raise TimeoutError("no champion within 120 s")


class Serving:
    """One serving process of our own beside the platform, stopped by its PID."""

    def __init__(self, platform: Platform, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        child = {**platform.child_env("serving"), **env,
                 "DRIFTLOOP_HOST": "127.0.0.1", "DRIFTLOOP_SERVING_PORT": str(self.port)}
        with log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "services.serving"],
                                            env=child, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_serving(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log.read_text()
                try:
                    if any(m["model"] == MODEL for m in client.get("/v1/models").json()):
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"serving did not load {MODEL}:\n{self.log.read_text()}")

    def stop(self) -> None:
        terminate(self.process, 30)


@pytest.fixture(scope="module")
def servings(platform: Platform, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Serving]]:
    """The serving processes of the tests, started together (each takes seconds to join its
    lifecycle group and load the champion)."""
    logs = tmp_path_factory.mktemp("servings")
    # (A loaded 2-core machine can hold the broker's answer back for a while: wait for room
    # rather than answer 503, which these tests are not about.)
    small = {"DRIFTLOOP_SERVING_OUTBOX_CAPACITY": str(CAPACITY),
             "DRIFTLOOP_SERVING_OUTBOX_WAIT_SECONDS": "60"}
    wanted = {
        # A small outbox: big batches fill it, so requests must wait for room rather than
        # have their events dropped (a 500-instance body is also predicted off the loop).
        "sigterm": {"DRIFTLOOP_SERVING_PREDICTION_DELIVERY": "fast", **small},
        "acked": {"DRIFTLOOP_SERVING_PREDICTION_DELIVERY": "acked"},
        "fast": {"DRIFTLOOP_SERVING_PREDICTION_DELIVERY": "fast", **small},
    }
    started = {name: Serving(platform, logs / f"{name}.log", env)
               for name, env in wanted.items()}
    try:
        for server in started.values():
            server.wait_serving()
        yield started
    finally:
        for server in started.values():
            server.stop()
            assert not Path(f"/proc/{server.process.pid}").exists()


_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


async def load(port: int, singles: int, batches: dict[int, int], answered: set[str],
               clients: int = 16) -> None:
    """`singles` one-instance calls and, per size, that many batch calls from `clients`
    concurrent keep-alive connections (a bare HTTP/1.1 client: httpx would be the
    bottleneck); the ids of every prediction answered 200 go into `answered`. Stops quietly
    when serving goes away."""
    rows = ROWS * (max(batches, default=1) // len(ROWS) + 1)
    bodies = [orjson.dumps({"features": ROWS[i % len(ROWS)]}) for i in range(singles)]
    for size, count in batches.items():
        bodies += [orjson.dumps({"instances": rows[:size]})] * count
    order = sorted(range(len(bodies)), key=lambda i: (i * 7919) % len(bodies))
    path = f"/v1/models/{MODEL}/predict".encode()

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in order[number::clients]:
                writer.write(b"POST %s HTTP/1.1\r\nhost: serving\r\ncontent-type: "
                             b"application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (path, len(bodies[i]), bodies[i]))
                head = await reader.readuntil(b"\r\n\r\n")
                length = _LENGTH.search(head)
                assert length is not None, head
                found = orjson.loads(await reader.readexactly(int(length.group(1))))
                assert head.startswith(b"HTTP/1.1 200 "), (head, found)
                answered.update([p["prediction_id"] for p in found["predictions"]]
                                if "predictions" in found else [found["prediction_id"]])
        except (ConnectionError, asyncio.IncompleteReadError):
            return  # serving was killed
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))


async def kill_when(process: subprocess.Popen[bytes], answered: set[str], after: int) -> None:
    while len(answered) < after:
        await asyncio.sleep(0.005)
    process.send_signal(signal.SIGKILL)


def events_on_topic(platform: Platform, wanted: set[str], settle: float = 3.0) -> set[str]:
    """The prediction ids of `wanted` found on the topic (read until nothing new comes)."""
    found: set[str] = set()

    async def read() -> None:
        async with follower(str(platform.bootstrap), [Topic.PREDICTIONS]) as consumer:
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < settle:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for messages in batches.values():
                    for message in messages:
                        if message.key is not None and message.key.decode() in wanted:
                            found.add(message.key.decode())
                    quiet_since = time.monotonic() if messages else quiet_since
                if found == wanted:
                    return

    asyncio.run(read())
    return found


def test_sigterm_publishes_every_answered_prediction(platform: Platform,
                                                     servings: dict[str, Serving]) -> None:
    server = servings["sigterm"]
    answered: set[str] = set()
    asyncio.run(load(server.port, 2_000, {BATCH: 40, 500: 4}, answered))
    assert len(answered) == 2_000 + 40 * BATCH + 4 * 500
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    missing = answered - events_on_topic(platform, answered)
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions lost"
    assert "outbox drained" in server.log.read_text()


def test_acked_mode_loses_no_answered_prediction_to_kill_9(
        platform: Platform, servings: dict[str, Serving]) -> None:
    server = servings["acked"]
    answered: set[str] = set()

    async def run() -> None:
        await asyncio.gather(load(server.port, 4_000, {BATCH: 100}, answered),
                             kill_when(server.process, answered, after=1_500))

    asyncio.run(run())
    assert server.process.wait(10) == -signal.SIGKILL
    assert len(answered) >= 1_500
    missing = answered - events_on_topic(platform, answered)
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions lost"


def test_fast_mode_loses_at_most_the_pending_window_to_kill_9(
        platform: Platform, servings: dict[str, Serving]) -> None:
    server = servings["fast"]
    answered: set[str] = set()

    async def run() -> None:
        await asyncio.gather(load(server.port, 4_000, {BATCH: 100}, answered),
                             kill_when(server.process, answered, after=1_500))

    asyncio.run(run())
    assert server.process.wait(10) == -signal.SIGKILL
    lost = len(answered - events_on_topic(platform, answered))
    print(f"fast mode, kill -9: {lost} of {len(answered)} answered predictions lost")
    # The documented bound: outbox_capacity + one request's instances - 1.
    assert lost <= CAPACITY + BATCH - 1, f"{lost} of {len(answered)} answered predictions lost"
