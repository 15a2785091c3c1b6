"""Prometheus metrics of ingestion."""

from __future__ import annotations

from prometheus_client import Counter

RECORDS = Counter("driftloop_ingestion_records_total", "Labeled records by outcome.", ["outcome"])
