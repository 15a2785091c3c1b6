"""Prometheus metrics of monitoring."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

JOIN_DROPPED = Counter(
    "driftloop_monitoring_join_dropped_total",
    "Predictions or labels dropped from the join before their pair arrived: the bound "
    "(DRIFTLOOP_MONITORING_MAX_PENDING_*) was reached, or the label ttl passed.",
    ["side", "why"])

FEEDBACK = Counter(
    "driftloop_feedback_total",
    "Feedback (labels named by prediction id alone) by what became of it: joined with its "
    "prediction, or dead-lettered because the prediction never came.", ["outcome"])

SWAP_LATENCY_SECONDS = Gauge(
    "driftloop_swap_latency_seconds",
    "Last concept-drift alarm to the first prediction of a newer version of the model, in "
    "seconds of monitoring's clock.", ["model"])
SWAP_LATENCY_SAMPLES = Gauge(
    "driftloop_swap_latency_samples",
    "Predictions of the model served by the drifted version between its last concept-drift "
    "alarm and the first prediction of a newer version: the stale answers a drift cost.",
    ["model"])
