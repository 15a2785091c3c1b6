"""Prometheus metrics of the shared mechanisms (bus, HTTP).

Metric objects are process-wide by Prometheus' design, so they are declared
once here; labels stay bounded (topic, service, outcome — never ids).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_CONSUMED = Counter(
    "driftloop_events_consumed_total", "Events handled by a consumer.", ["topic", "outcome"])
EVENTS_PUBLISHED = Counter(
    "driftloop_events_published_total", "Events handed to the producer.", ["topic"])
EVENTS_DROPPED = Counter(
    "driftloop_events_dropped_total",
    "Events the outbox could not queue or the broker did not accept.", ["topic", "why"])
DEAD_LETTERS = Counter(
    "driftloop_dead_letters_total", "Messages sent to the dead-letter topic.", ["source_topic"])
HANDLER_RETRIES = Counter(
    "driftloop_handler_retries_total", "Handler attempts that failed and were retried.", ["topic"])
HTTP_REQUESTS = Histogram(
    "driftloop_http_request_seconds", "HTTP request duration.", ["route", "status"])
