"""One run's figures as a JSON-ready mapping, and the tables printed from them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.loop import metrics
from bench.loop.driver import Events, Trace
from bench.loop.streams import Stream
from contracts.events import AlertStatus, LifecycleAction, TrainingReason

AFTER_DRIFT = 2000
"""Samples after each drift whose accuracy is reported."""


def model_figures(stream: Stream, result: metrics.Outcomes) -> dict[str, Any]:
    """Overall, after each drift and (classifiers) samples until back near the old level."""
    windows = metrics.after_drift(stream.drifts, result.end, AFTER_DRIFT)
    figures: dict[str, Any] = {"overall": result.mean(),
                               "before_drift": result.mean(None, stream.drifts[0])
                               if stream.drifts else None,
                               "after_drift": [result.mean(a, b) for a, b in windows]}
    if stream.task == "classification":
        figures["recovery_samples"] = [
            metrics.recovery(result, d, stop)
            for d, stop in metrics.drift_segments(stream.drifts, result.end)]
    return figures


def loop_figures(stream: Stream, trace: Trace, events: Events, versions: int,
                 served: metrics.Outcomes) -> dict[str, Any]:
    """What the loop did: retrains, alerts, and how fast a new version answered."""
    reasons = {r.request_id: r.reason for r in events.requests}
    fired = [a for a in events.alerts if a.status is AlertStatus.FIRING]
    swaps = []
    for alert in fired:
        if alert.kind != "concept_drift":
            continue
        at = alert.at.timestamp()
        swap = metrics.swap_after(at, trace.versions, trace.answered_at)
        answered_by_then = sum(1 for t in trace.answered_at if t <= at)
        swaps.append({"alarm_sample": trace.first + answered_by_then,
                      "seconds": swap.seconds if swap else None,
                      "samples": swap.samples if swap else None,
                      "version": swap.version if swap else None})
    return {
        "drift_requests": sum(1 for r in events.requests if r.reason is TrainingReason.DRIFT),
        "retrains": sum(1 for t in events.trained
                        if reasons.get(t.request_id) is not TrainingReason.INITIAL_DATA),
        "promoted": max(0, sum(1 for e in events.lifecycle
                               if e.action is LifecycleAction.PROMOTED) - 1),  # v1 is not one
        "rejected_candidates": sum(1 for e in events.lifecycle
                                   if e.action is LifecycleAction.REJECTED),
        "versions": versions,
        "alerts_fired": dict(Counter(a.kind for a in fired)),
        "alerts_resolved": sum(1 for a in events.alerts if a.status is AlertStatus.RESOLVED),
        "alarm_to_swap": swaps,
        "drift_to_new_version": [metrics.drift_to_swap(d, trace.versions, trace.first)
                                 for d in stream.drifts],
        "served_by_version": {str(v): {"samples": n, "mean": mean} for v, (n, mean)
                              in metrics.by_version(served, trace.versions).items()},
        "records_rejected": events.rejected,
    }


def run_result(stream: Stream, variant: str, seed: int, rate: float, trace: Trace,
               events: Events, versions: int, outcomes: dict[str, metrics.Outcomes],
               seconds: float, label_delay: int = 10) -> dict[str, Any]:
    """Everything one run measured, JSON-ready."""
    return {
        "stream": stream.name, "about": stream.about, "task": stream.task, "variant": variant,
        "seed": seed, "samples": len(stream.samples), "initial": trace.first,
        "label_delay": label_delay,
        "drifts": list(stream.drifts), "rate_asked": rate,
        "rate_achieved": metrics.achieved_rate(trace.sent_at, trace.answered_at),
        "behind_seconds": trace.behind, "retried": trace.retried,
        "latency_ms": metrics.latency_ms(trace.sent_at, trace.answered_at),
        "client_cpu_us_per_sample": 1e6 * trace.client_cpu / max(1, len(trace.versions)),
        "models": {name: model_figures(stream, result) for name, result in outcomes.items()},
        "loop": loop_figures(stream, trace, events, versions, outcomes["driftloop"]),
        "seconds": seconds,
    }


def _pct(value: float | None, task: str) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.1f}" if task == "classification" else f"{value:.2f}"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


NAMES = {"driftloop": "driftloop ({variant}, served)", "arf": "River ARF(10), in-process",
         "arf_delayed": "River ARF(10), in-process, labels {label_delay} samples late",
         "static": "static (first {initial:,}, never updated)"}


def run_table(result: dict[str, Any]) -> str:
    """The table of one stream at one rate, and a line on what the loop did."""
    task, drifts = result["task"], result["drifts"]
    metric = "accuracy %" if task == "classification" else "MAE"
    head = [f"prequential {metric}"] + (["before drift 1"] if drifts else []) + [
        f"{AFTER_DRIFT:,} after drift {i + 1} ({d:,})" for i, d in enumerate(drifts)]
    if task == "classification" and drifts:
        head.append("back within 2 pts after drift (samples)")
    lines = [f"{result['stream']} · {result['variant']} · seed {result['seed']} · "
             f"{result['rate_asked']:,.0f}/s asked, {result['rate_achieved']:,.0f}/s achieved "
             f"(at most {result['behind_seconds']:.2f} s behind schedule; predict p50 "
             f"{result['latency_ms']['p50']:.1f} ms, p99 {result['latency_ms']['p99']:.1f} ms; "
             f"harness CPU {result['client_cpu_us_per_sample']:,.0f} µs/sample) "
             f"— {result['about']}",
             "| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, figures in result["models"].items():
        cells = [_pct(figures["overall"], task)] + (
            [_pct(figures["before_drift"], task)] if drifts else []) + [
            _pct(v, task) for v in figures["after_drift"]]
        if "recovery_samples" in figures and drifts:
            cells.append(" / ".join(_count(v) for v in figures["recovery_samples"]))
        label = NAMES[name].format(variant=result["variant"], initial=result["initial"],
                                   label_delay=result.get("label_delay", "?"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(loop_line(result["loop"], task))
    return "\n".join(lines)


def loop_line(loop: dict[str, Any], task: str) -> str:
    alerts = ", ".join(f"{kind} {n}" for kind, n in sorted(loop["alerts_fired"].items()))
    swaps = "; ".join(_swap(s) for s in loop["alarm_to_swap"]) or "no concept-drift alarm"
    return (f"loop: {loop['drift_requests']} drift retrain requests, {loop['retrains']} "
            f"candidates trained, {loop['promoted']} promoted, {loop['rejected_candidates']} "
            f"rejected ({loop['versions']} versions) · alerts fired: {alerts or 'none'} "
            f"({loop['alerts_resolved']} resolved) · alarm → new version serving: {swaps} · "
            f"drift → new version: "
            f"{' / '.join(_count(v) for v in loop['drift_to_new_version']) or '—'} samples · "
            f"served by version: " + ", ".join(
                f"v{v} {_pct(s['mean'], task)} on {s['samples']:,}"
                for v, s in loop["served_by_version"].items())
            + (f" · {loop['records_rejected']} records REJECTED" if loop["records_rejected"]
               else ""))


def _swap(swap: dict[str, Any]) -> str:
    where = f"alarm at sample {swap['alarm_sample']:,}"
    if swap["seconds"] is None:
        return f"{where}, never"
    return f"{where}, {swap['seconds']:.1f} s / {swap['samples']:,} samples (v{swap['version']})"


def summary_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per run: the figures the issue's goals are checked against."""
    lines = ["| stream | variant | seed | rate asked → achieved | driftloop | ARF(10) | "
             "ARF(10), labels late | static | "
             "after drift 1: driftloop / ARF | after drift 2: driftloop / ARF | retrains "
             "(promoted) | alerts fired | alarm → swap s (samples) |",
             "|---" * 13 + "|"]
    for r in results:
        task, models, loop = r["task"], r["models"], r["loop"]
        after = []
        for i in range(2):
            pair = [models[m]["after_drift"][i] if i < len(models[m]["after_drift"]) else None
                    for m in ("driftloop", "arf")]
            after.append(" / ".join(_pct(v, task) for v in pair) if pair[0] is not None
                         else "—")
        swaps = ", ".join(f"{s['seconds']:.1f} ({s['samples']:,})" if s["seconds"] is not None
                          else "never" for s in loop["alarm_to_swap"]) or "—"
        alerts = ", ".join(f"{k} {n}" for k, n in sorted(loop["alerts_fired"].items())) or "0"
        lines.append(
            f"| {r['stream']} | {r['variant']} | {r['seed']} | {r['rate_asked']:,.0f} → "
            f"{r['rate_achieved']:,.0f}/s | {_pct(models['driftloop']['overall'], task)} | "
            f"{_pct(models['arf']['overall'], task)} | "
            f"{_pct(models.get('arf_delayed', {}).get('overall'), task)} | "
            f"{_pct(models['static']['overall'], task)} "
            f"| {after[0]} | {after[1]} | {loop['retrains']} ({loop['promoted']}) | {alerts} | "
            f"{swaps} |")
    return "\n".join(lines)
