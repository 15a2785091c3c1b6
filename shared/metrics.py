"""Prometheus metrics of the shared mechanisms (bus, HTTP).

Metric objects are process-wide by Prometheus' design, so they are declared
once here; labels stay bounded (topic, service, outcome — never ids).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "driftloop_events_consumed_total", "Events handled by a consumer.", ["topic", "outcome"])
EVENTS_PUBLISHED = Counter(
    "driftloop_events_published_total", "Events handed to the producer.", ["topic"])
EVENTS_DROPPED = Counter(
    "driftloop_events_dropped_total",
    "Events answered for but never acknowledged by the broker (why: not_acknowledged, "
    "shutdown).", ["topic", "why"])
OUTBOX_REFUSED = Counter(
    "driftloop_outbox_refused_requests_total",
    "Requests refused (503) because the outbox was full: nothing answered, nothing lost.",
    ["topic"])
OUTBOX_PENDING = Gauge(
    "driftloop_outbox_pending_events",
    "Events in the outbox not yet acknowledged by the broker (what a kill -9 would lose).",
    ["topic"])
OUTBOX_BATCH_EVENTS = Histogram(
    "driftloop_outbox_batch_events", "Events per record batch shipped by the outbox.",
    ["topic"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096))
DEAD_LETTERS = Counter(
    "driftloop_dead_letters_total", "Messages sent to the dead-letter topic.", ["source_topic"])
HANDLER_RETRIES = Counter(
    "driftloop_handler_retries_total", "Handler attempts that failed and were retried.", ["topic"])
HTTP_REQUESTS = Histogram(
    "driftloop_http_request_seconds", "HTTP request duration.", ["route", "status"])
CHANGELOG_REJECTED = Counter(
    "driftloop_changelog_rejected_records_total",
    "Changelog records skipped at restore because their tag is not the service's own "
    "(forged, tampered, or written under another secret).")
