"""Loop-quality benchmark: River's drifting streams through the real services, against River's
adaptive random forest and a static model computed in-process on the same samples.

For each seed, stream and rate: write the run's project file (bench/loop/project_file.py),
start the embedded broker and the five services on free ports in a private data directory,
drive the stream (bench/loop/driver.py), stop every service by its PID, then score
driftloop's served predictions, ARF(10) and the static model on the same samples and print a
table. Results also go to bench/loop/results/loop-<variant>-<time>.json, written after
every run.

    python -m bench.loop.run [--streams sine,sea] [--samples 30000] [--rates 200,1000]
                             [--seeds 42] [--variant batch|online]      (or: make bench-loop)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.common import start_platform
from bench.loop import baselines, metrics, project_file, report
from bench.loop.driver import Plan, drive
from bench.loop.streams import STREAMS, Stream, build

RESULTS = Path(__file__).resolve().parent / "results"


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 (a benchmark's output is its report)


def _list(text: str, cast: Any = str) -> list[Any]:
    return [cast(item) for item in text.split(",") if item.strip()]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=_list, default=list(STREAMS),
                        help=f"comma-separated, of: {', '.join(STREAMS)} (default: all)")
    parser.add_argument("--samples", type=int, default=30_000,
                        help="samples per stream; drifts at 1/3 and 2/3 (default 30000)")
    parser.add_argument("--initial", type=int, default=2_000,
                        help="first samples published for the initial training (default 2000)")
    parser.add_argument("--rates", type=lambda t: _list(t, float), default=[200.0, 1000.0],
                        help="target predictions per second (default 200,1000)")
    parser.add_argument("--seeds", type=lambda t: _list(t, int), default=[42],
                        help="stream and ARF seeds (default 42)")
    parser.add_argument("--variant", choices=project_file.VARIANTS, default="batch",
                        help="driftloop's configuration (bench/loop/project_file.py)")
    parser.add_argument("--label-delay", type=int, default=10,
                        help="a label is published this many samples after its prediction")
    parser.add_argument("--workers", type=int, default=0,
                        help="concurrent HTTP connections (default: rate/20, 8..32)")
    parser.add_argument("--serial-baselines", action="store_true",
                        help="compute ARF and static before the platform starts, never "
                             "alongside the slowest run (slower; for a machine with one core)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each run's data directory (logs, stores), not only failed ones")
    args = parser.parse_args()
    unknown = set(args.streams) - set(STREAMS)
    if unknown:
        parser.error(f"unknown streams {sorted(unknown)} (known: {', '.join(STREAMS)})")
    if not 0 < args.initial < args.samples // 3:
        parser.error("--initial must be below the first drift (samples / 3)")
    return args


def one_run(stream: Stream, seed: int, rate: float, args: argparse.Namespace, root: Path,
            yardsticks: Future[dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    run_dir = root / f"{stream.name}-seed{seed}-{rate:g}per-s"
    run_dir.mkdir(parents=True)
    project_file.write(run_dir / "project.toml", args.variant, stream, args.initial)
    workers = args.workers or max(8, min(32, math.ceil(rate / 20)))
    plan = Plan(model=project_file.MODEL, dataset=project_file.DATASET, initial=args.initial,
                rate=rate, label_delay=args.label_delay, workers=workers)
    say(f"\n== {stream.name}, seed {seed}, {rate:g}/s, {args.variant} "
        f"(platform data and logs: {run_dir})")
    platform = start_platform(run_dir / "project.toml", data_dir=run_dir)
    try:
        trace, events, versions = asyncio.run(drive(platform, stream, plan, say))
    finally:
        platform.stop()
    baseline = yardsticks.result()
    predicted = {"driftloop": trace.predicted, "arf": baseline["arf"],
                 "arf_delayed": baseline["arf_delayed"], "static": baseline["static"]}
    truth = [y for _, y in stream.samples]
    scored = {name: metrics.outcomes(stream.task, truth, values, args.initial)
              for name, values in predicted.items()}
    result = report.run_result(stream, args.variant, seed, rate, trace, events, versions, scored,
                               time.perf_counter() - started, args.label_delay)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def main() -> None:
    args = arguments()
    if importlib.util.find_spec("sniffio") is None:
        say("note: sniffio is not installed, so httpcore retries a failed import on every "
            "request (~0.3 ms of client CPU each); `make bench-loop` installs it")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "Unable connect" while it starts
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="driftloop-bench-loop-"))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"loop-{args.variant}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    document: dict[str, Any] = {
        "command": vars(args), "cpus": os.cpu_count(), "load_at_start": os.getloadavg(),
        "runs": [], "failures": []}
    # One worker process computes ARF and the static model of each stream while the slowest
    # rate's run is served (it is paced: the platform and client use about half a core at
    # 200/s); every faster run waits until it is done, so only that run shares the machine.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        for seed in args.seeds:
            for name in args.streams:
                stream = build(name, args.samples, seed)
                spec = project_file.model(args.variant, stream, args.initial)
                yardsticks = pool.submit(baselines.both, stream, args.initial, seed, spec,
                                         args.label_delay)
                for rate in sorted(args.rates):
                    if args.serial_baselines or rate != min(args.rates):
                        seconds = yardsticks.result()["seconds"]
                        say(f"  (ARF and static in-process: {seconds:.0f} s)")
                    try:
                        result = one_run(stream, seed, rate, args, root, yardsticks)
                    except Exception as exc:  # one broken run must not lose the others
                        cause = _root_cause(exc)
                        say(f"  FAILED: {cause} (its data dir is kept)")
                        document["failures"].append({"stream": name, "seed": seed, "rate": rate,
                                                     "error": cause})
                        continue
                    document["runs"].append(result)
                    document["elapsed_seconds"] = time.perf_counter() - started
                    out.write_text(json.dumps(document, indent=1), encoding="utf-8")
                    say(report.run_table(result))
    document["load_at_end"] = os.getloadavg()
    out.write_text(json.dumps(document, indent=1), encoding="utf-8")
    if not args.keep and not any(root.iterdir()):
        root.rmdir()
    say("\n" + report.summary_table(document["runs"]))
    say(f"\nelapsed {time.perf_counter() - started:,.0f} s on {os.cpu_count()} CPUs "
        f"(load average at start {document['load_at_start'][0]:.1f}); results in {out}")
    if document["failures"]:
        raise SystemExit(f"{len(document['failures'])} run(s) failed: {document['failures']}")


if __name__ == "__main__":
    main()


def _root_cause(exc: BaseException) -> str:
    """The first error inside task groups, with where it was raised: "unhandled errors in a
    TaskGroup" alone says nothing."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
