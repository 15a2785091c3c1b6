"""Prometheus metrics of monitoring."""

from __future__ import annotations

from prometheus_client import Counter

JOIN_DROPPED = Counter(
    "driftloop_monitoring_join_dropped_total",
    "Predictions or labels dropped from the join before their pair arrived: the bound "
    "(DRIFTLOOP_MONITORING_MAX_PENDING_*) was reached, or the label ttl passed.",
    ["side", "why"])
