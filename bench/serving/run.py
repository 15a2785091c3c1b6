"""Serving benchmark: what each prediction delivery mode costs, and whether every answered
prediction reaches the predictions topic.

Starts the embedded broker and the platform (to train and register a champion), stops the
services the benchmark does not need (their CPU would be counted against serving), then
runs one serving process per delivery mode, each on its own topic prefix so its events
can be counted alone. wrk drives it at c=8 and c=64 with single records and 32-instance
batches; after each run the events on the topic are counted (read, not end offsets: the
embedded broker counts batches there) against the predictions wrk saw answered.

    python -m bench.serving.run [--seconds 8]      (or: make bench-serving)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from river.datasets import synth

from bench.common import start_platform, wait_champion
from cli.kafka_io import follower, producer, send_all
from cli.platform import Platform
from contracts.events import LabeledRecord
from contracts.topics import Topic
from shared.broker import free_port
from shared.processes import terminate

ROOT = Path(__file__).resolve().parents[2]
MODEL = "loans-tree"
ROWS = [x for x, _ in synth.Agrawal(seed=7).take(32)]
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{body}]]
"""


@dataclass
class Result:
    mode: str
    clients: int
    instances: int
    rps: float
    p50_ms: float
    p99_ms: float
    answered: int
    refused: int
    events: int
    per_batch: float


def champion(platform: Platform) -> None:
    """Publish 2,000 labeled records and wait until the registry has a champion."""
    records = [LabeledRecord(dataset="loans", record_id=f"r{i}", features=x, label=int(y))
               for i, (x, y) in enumerate(synth.Agrawal(seed=1).take(2_000))]

    async def publish() -> None:
        async with producer(str(platform.bootstrap)) as kafka:
            await send_all(kafka, Topic.DATA_LABELED.value,
                           [(r.record_id, r) for r in records], "bench")

    asyncio.run(publish())
    wait_champion(platform, MODEL)


class Serving:
    """A serving process in one delivery mode, publishing to its own topic prefix."""

    def __init__(self, platform: Platform, mode: str, logs: Path) -> None:
        self.mode = mode
        self.prefix = f"bench-{mode}-"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**platform.child_env("serving"),
               "DRIFTLOOP_KAFKA_TOPIC_PREFIX": self.prefix,
               "DRIFTLOOP_HOST": "127.0.0.1", "DRIFTLOOP_SERVING_PORT": str(self.port),
               "DRIFTLOOP_SERVING_PREDICTION_DELIVERY": mode, "DRIFTLOOP_LOG_LEVEL": "WARNING"}
        with (logs / f"serving-{mode}.log").open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "services.serving"], env=env,
                                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                            start_new_session=True)

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise SystemExit(f"serving ({self.mode}) exited; see its log")
                try:
                    if any(m["model"] == MODEL for m in client.get("/v1/models").json()):
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        raise SystemExit(f"serving ({self.mode}) did not load {MODEL} in {timeout:.0f} s")

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        found = re.search(rf'^{name}\{{topic="predictions"\}} (\S+)', text, re.M)
        return float(found.group(1)) if found else 0.0

    def pending(self) -> float:
        return self.metric("driftloop_outbox_pending_events")

    def batches(self) -> tuple[float, float]:
        """(record batches shipped, events in them) so far."""
        return (self.metric("driftloop_outbox_batch_events_count"),
                self.metric("driftloop_outbox_batch_events_sum"))


def wrk(url: str, clients: int, seconds: int, body: bytes, scripts: Path) -> dict[str, float]:
    script = scripts / f"body-{len(body)}.lua"
    script.write_text(LUA.format(body=body.decode()))
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency",
                          "-s", str(script), f"{url}/v1/models/{MODEL}/predict"],
                         capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert found, out
        return float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]

    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert total and rps, out
    return {"requests": int(total.group(1)), "rps": float(rps.group(1)), "p50": ms("50"),
            "p99": ms("99"), "non2xx": int(non2xx.group(1)) if non2xx else 0}


class Counter:
    """Counts a prefix's prediction events, reading on from where it stopped."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.loop = asyncio.new_event_loop()
        self.context = follower(bootstrap, [Topic.PREDICTIONS], prefix)
        self.consumer = self.loop.run_until_complete(self.context.__aenter__())

    def count_new(self, quiet: float = 1.5) -> int:
        async def read() -> int:
            seen, quiet_since = 0, time.monotonic()
            while time.monotonic() - quiet_since < quiet:
                batches = await self.consumer.getmany(timeout_ms=300, max_records=50_000)
                got = sum(len(messages) for messages in batches.values())
                seen += got
                quiet_since = time.monotonic() if got else quiet_since
            return seen

        return self.loop.run_until_complete(read())

    def close(self) -> None:
        self.loop.run_until_complete(self.context.__aexit__(None, None, None))
        self.loop.close()


def bench(servings: list[Serving], bootstrap: str, seconds: int,
          scripts: Path) -> list[Result]:
    """Every (payload, clients) run, each mode in turn (interleaved, so a change in the
    machine's load hits both modes alike)."""
    counters = {s.mode: Counter(bootstrap, s.prefix) for s in servings}
    results = []
    try:
        for counter in counters.values():
            counter.count_new(quiet=1.0)  # nothing yet; joins the partitions
        for instances in (1, 32):
            body = orjson.dumps({"features": ROWS[0]} if instances == 1
                                else {"instances": ROWS[:instances]})
            for clients in (8, 64):
                for serving in servings:
                    shipped, events = serving.batches()
                    run = wrk(serving.url, clients, seconds, body, scripts)
                    deadline = time.monotonic() + 60
                    while serving.pending() and time.monotonic() < deadline:
                        time.sleep(0.2)
                    answered = (run["requests"] - run["non2xx"]) * instances
                    shipped_now, events_now = serving.batches()
                    per_batch = (events_now - events) / max(shipped_now - shipped, 1)
                    results.append(Result(serving.mode, clients, instances, run["rps"],
                                          run["p50"], run["p99"], answered, run["non2xx"],
                                          counters[serving.mode].count_new(), per_batch))
                    print(table([results[-1]], header=False), flush=True)  # noqa: T201
    finally:
        for counter in counters.values():
            counter.close()
    return results


def table(results: list[Result], header: bool = True) -> str:
    lines = ["| mode | clients | instances/request | requests/s | p50 ms | p99 ms | "
             "predictions answered | events on topic | events/answered | 503s | "
             "events per record batch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"] if header else []
    for r in results:
        ratio = r.events / r.answered if r.answered else float("nan")
        lines.append(f"| {r.mode} | {r.clients} | {r.instances} | {r.rps:,.0f} | "
                     f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.answered:,} | {r.events:,} | "
                     f"{ratio:.4f} | {r.refused} | {r.per_batch:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `sudo apt-get install -y wrk` "
                         "(make bench-serving does it)")
    data_dir = Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    print(f"starting the platform (logs in {data_dir / 'logs'})", flush=True)  # noqa: T201
    platform = start_platform(ROOT / "driftloop.toml", data_dir)
    servings: list[Serving] = []
    try:
        champion(platform)
        for name in ("ingestion", "training", "monitoring", "serving"):
            terminate(platform.processes[name], 15)  # only the broker and registry stay
        servings = [Serving(platform, mode, data_dir / "logs") for mode in ("fast", "acked")]
        for serving in servings:
            serving.wait_serving()
        print(table([]), flush=True)  # noqa: T201
        results = bench(servings, str(platform.bootstrap), args.seconds, data_dir)
        for serving in servings:  # SIGTERM drains; then nothing more may arrive
            terminate(serving.process, 90)
        print("\n" + table(results))  # noqa: T201
    finally:
        for serving in servings:
            terminate(serving.process, 30)
        platform.stop()


if __name__ == "__main__":
    main()
