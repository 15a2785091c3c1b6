"""How many events per second one monitoring worker takes: predictions and their feedback,
through the same consumer and handler as the service (join, detectors, data drift, live
windows), beside a plain aiokafka consume loop over the same messages on the same broker, in
the same run.

`make bench-monitoring` (or `python -m bench.monitoring.run --events 100000`). The broker is
the embedded one, started here on a free port and stopped by its PID. Agrawal samples are
served by a champion trained here (a Hoeffding tree on 2,000 samples): each prediction event
is what serving publishes, each feedback its label, 10 predictions later; 1 in 5 answers
is wrong from the middle on, so the concept detector has work to do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from river import tree
from river.datasets import synth

from cli.kafka_io import send_all
from contracts.base import Contract
from contracts.events import Feedback, PredictionMade, RecordValidated
from contracts.topics import Topic
from services.monitoring.consumers import monitor_handler
from services.monitoring.handlers import Monitor
from services.training.evaluation import numeric_features, profile
from shared.broker import EmbeddedBroker, free_port
from shared.bus import Bus
from shared.changelog import Changelog
from shared.consumer import Consumer
from shared.project import load_project
from shared.settings import CommonSettings
from shared.signing import Signer, generate_pem_pair

ROOT = Path(__file__).resolve().parents[2]
MODEL = "loans-tree"


def events(count: int, seed: int) -> tuple[list[tuple[str, Contract]], Any]:
    """`count` predictions and their feedback, interleaved (each label 10 predictions later),
    and the profile of the training sample (the data-drift reference)."""
    samples = list(synth.Agrawal(seed=seed).take(2_000 + count))
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in samples[:2_000]:
        model.learn_one(x, y)
    start = datetime.now(UTC)
    made: list[tuple[str, Contract]] = []
    labels: list[tuple[str, Contract]] = []
    for index, (x, _) in enumerate(samples[2_000:]):
        pid = uuid.uuid4().hex
        predicted = model.predict_one(x)
        wrong = index > count // 2 and index % 5 == 0
        made.append((pid, PredictionMade(prediction_id=pid, model=MODEL, version=1,
                                         features=x, prediction=predicted,
                                         latency_seconds=0.00004,
                                         at=start + timedelta(milliseconds=index))))
        labels.append((pid, Feedback(prediction_id=pid,
                                     label=(1 - predicted) if wrong else predicted)))
    stream: list[tuple[str, Contract]] = []
    for index, item in enumerate(made):
        stream.append(item)
        if index >= 10:
            stream.append(labels[index - 10])
    stream.extend(labels[len(made) - 10:])
    return stream, samples[:2_000]


async def produce(bootstrap: str, stream: list[tuple[str, Contract]]) -> None:
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                              max_batch_size=256 * 1024)
    await client.start()
    try:
        for topic, kind in ((Topic.PREDICTIONS, PredictionMade), (Topic.FEEDBACK, Feedback)):
            await send_all(client, topic.value,
                           [(k, e) for k, e in stream if isinstance(e, kind)], "bench")
    finally:
        await client.stop()


async def plain(bootstrap: str, total: int) -> float:
    """Seconds a plain aiokafka getmany loop takes to read `total` messages (decoding JSON,
    nothing else): the floor any consumer of these topics pays."""
    consumer = AIOKafkaConsumer(Topic.PREDICTIONS.value, Topic.FEEDBACK.value,
                                bootstrap_servers=bootstrap, group_id=f"plain-{uuid.uuid4()}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen, started = 0, time.perf_counter()
        while seen < total:
            for messages in (await consumer.getmany(timeout_ms=500,
                                                    max_records=1000)).values():
                for message in messages:
                    json.loads(message.value)
                seen += len(messages)
            if seen:
                await consumer.commit()
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def monitoring(bootstrap: str, count: int, reference: Any,
                     durable: bool) -> tuple[float, Monitor, Changelog | None, float]:
    """Seconds the monitoring worker's consumer and handler take to take every prediction and
    feedback (done when all `count` are scored); `durable`: checkpointing its state to a
    changelog as the service does (then also the seconds a new worker takes to restore it)."""
    os.environ["DRIFTLOOP_KAFKA_BOOTSTRAP"] = bootstrap
    settings = CommonSettings()
    project = load_project(ROOT / "driftloop.toml")
    monitor = Monitor(project, partitions=settings.kafka_partitions)
    spec = project.datasets[project.models[MODEL].dataset]
    features = numeric_features(spec)
    now = datetime.now(UTC)
    rows = [RecordValidated(dataset="loans", record_id=f"r{i}", features=x, label=y,
                            event_time=now, ingested_at=now, sequence=i)
            for i, (x, y) in enumerate(reference)]
    monitor.on_champion(MODEL, 1, profile(rows, features), {"accuracy": 0.9})
    bus = Bus(settings, "monitoring")
    await bus.start()
    key, _ = generate_pem_pair()
    registry = Signer.from_pem(key, "registry").verifier()
    changelog = (Changelog(bus, f"bench.state-{uuid.uuid4().hex[:8]}", os.urandom(32),
                           settings.kafka_partitions) if durable else None)
    worker = monitor_handler(bus, monitor, registry, changelog)
    await worker.restore()
    consumer = Consumer(bus, f"monitoring-{uuid.uuid4()}",
                        [Topic.PREDICTIONS, Topic.FEEDBACK, Topic.MODELS_LIFECYCLE],
                        worker, max_records=1000, stateful=True,
                        committable=worker.committable if durable else None)
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    await consumer.assigned.wait()
    started = time.perf_counter()
    watch = monitor.watches[MODEL]
    while watch.labeled < count:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - started
    stopping.set()
    await task
    restore = 0.0
    if changelog is not None:
        await worker.checkpoint()
        started = time.perf_counter()
        await monitor_handler(bus, Monitor(project, partitions=settings.kafka_partitions),
                              registry, changelog).restore()
        restore = time.perf_counter() - started
    await bus.stop()
    return seconds, monitor, changelog, restore


def serving_peak(seconds: int) -> float:
    """Predictions per second one serving process answers (and publishes) at c=8, single
    records, driven by wrk: what one monitoring worker must keep up with. The platform
    trains the champion; then only the broker, the registry and this serving process run."""
    from bench.common import start_platform
    from bench.serving.run import ROWS, Serving, champion, wrk
    from shared.processes import terminate

    data_dir = Path(tempfile.mkdtemp(prefix="driftloop-bench-monitoring-serving-"))
    platform = start_platform(ROOT / "driftloop.toml", data_dir)
    serving: Serving | None = None
    try:
        champion(platform)
        for name in ("ingestion", "training", "monitoring", "serving"):
            terminate(platform.processes[name], 15)
        serving = Serving(platform, "fast", data_dir / "logs")
        serving.wait_serving()
        run = wrk(serving.url, 8, seconds, json.dumps({"features": ROWS[0]}).encode(),
                  data_dir)
        return run["rps"] * (run["requests"] - run["non2xx"]) / max(run["requests"], 1)
    finally:
        if serving is not None:
            terminate(serving.process, 30)
        platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000,
                        help="predictions (each with its feedback: twice as many events)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--serving-seconds", type=int, default=10,
                        help="length of the wrk run that measures serving's peak (0: skip)")
    args = parser.parse_args()
    if args.serving_seconds and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `sudo apt-get install -y wrk` "
                         "(make bench-monitoring does it), or pass --serving-seconds 0")
    stream, reference = events(args.events, args.seed)
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-monitoring-") as scratch:
        broker = EmbeddedBroker(port=free_port(), log_file=Path(scratch) / "broker.log")
        broker.start()
        try:
            asyncio.run(produce(broker.bootstrap, stream))
            total = len(stream)
            floor = asyncio.run(plain(broker.bootstrap, total))
            runs = []
            for durable in (False, True):
                before = resource.getrusage(resource.RUSAGE_SELF)
                result = asyncio.run(monitoring(broker.bootstrap, args.events, reference,
                                                durable))
                after = resource.getrusage(resource.RUSAGE_SELF)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                runs.append((result, cpu))
        finally:
            broker.stop()
    (memory, memory_cpu), (durable_run, durable_cpu) = runs
    seconds, monitor = memory[0], memory[1]
    changelog, restore = durable_run[2], durable_run[3]
    assert changelog is not None
    watch = monitor.watches[MODEL]
    rows = [("plain aiokafka getmany + json.loads", total / floor, floor, None),
            ("monitoring worker, state in memory only", total / seconds, seconds,
             memory_cpu / total * 1e6),
            ("monitoring worker, state checkpointed to its changelog every 2 s",
             total / durable_run[0], durable_run[0], durable_cpu / total * 1e6)]
    lines = [f"\n{args.events:,} predictions + {args.events:,} feedback = {total:,} events on "
             f"the embedded broker, {os.cpu_count()} CPUs",
             "| consumer | events/s | seconds | CPU µs/event |", "|---|---|---|---|"]
    lines += [f"| {name} | {rate:,.0f} | {took:.1f} | {'—' if per is None else f'{per:.0f}'} |"
              for name, rate, took, per in rows]
    lines.append(f"\nmonitoring / plain: {rows[1][1] / rows[0][1]:.2f}× in memory, "
                 f"{rows[2][1] / rows[0][1]:.2f}× with its changelog; scored "
                 f"{watch.labeled:,}, alerts {len(monitor.alerts)}, pending joins "
                 f"{monitor.join.pending()}, peak RSS {after.ru_maxrss / 1024:.0f} MB")
    lines.append(f"changelog: {changelog.checkpoints} checkpoints, {changelog.written:,} "
                 f"records, {changelog.bytes_written / 1e6:.1f} MB "
                 f"({changelog.bytes_written / total:.0f} bytes per input event); a new "
                 f"worker restored it in {restore:.2f} s")
    if args.serving_seconds:
        peak = serving_peak(args.serving_seconds)
        taken = total / durable_run[0] / 2  # predictions a second, each with its feedback
        lines.append(f"serving peak, one process, c=8, single records: {peak:,.0f} "
                     f"predictions/s; one monitoring worker with its changelog takes "
                     f"{taken:,.0f} predictions/s with their feedback: {taken / peak:.2f}×")
    print("\n".join(lines))  # noqa: T201

if __name__ == "__main__":
    main()
