"""CloudEvents binary-mode Kafka headers around a JSON contract body."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.base import Contract
from contracts.catalogue import ce_type_of
from shared.tracing import current_traceparent, new_trace_id, parse_traceparent

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The CloudEvents attributes of one message."""

    ce_id: str
    ce_type: str
    ce_source: str
    ce_time: str
    trace_id: str
    id_given: bool = True
    """False when the sender gave no ce_id: `ce_id` is then the message's coordinates, a
    name for logs only — another message could claim it, so it never decides a drop."""


_SPEC = ("ce_specversion", b"1.0")
_CONTENT = ("content-type", b"application/json")


def header_stamp(event_type: type[Contract], source: str,
                 trace_id: str | None = None) -> Callable[[bytes], Headers]:
    """Headers of events of one type published together (one request's predictions): what
    they share — type, source, time, trace — is built once; each call adds an event's ce_id."""
    kind = ("ce_type", ce_type_of(event_type).encode())
    origin = ("ce_source", source.encode())
    time = ("ce_time", datetime.now(UTC).isoformat().encode())
    trace = ("traceparent", current_traceparent(trace_id).encode())
    return lambda ce_id: [_SPEC, ("ce_id", ce_id), kind, origin, time, _CONTENT, trace]


def build_headers(event: Contract, source: str, ce_id: str | None = None,
                  trace_id: str | None = None) -> Headers:
    """Headers for publishing `event` from `source` in `trace_id`, else the current trace."""
    return header_stamp(type(event), source, trace_id)((ce_id or uuid.uuid4().hex).encode())


def read_envelope(headers: Headers | tuple[tuple[str, bytes], ...] | None, topic: str,
                  partition: int, offset: int) -> Envelope:
    """The envelope of a received message; producers outside driftloop may send no headers,
    so the id falls back to the message coordinates (for logs, see `id_given`) and the trace
    starts here."""
    found = {key: value.decode("utf-8", "replace") for key, value in (headers or ())}
    given = found.get("ce_id") or None
    return Envelope(
        ce_id=given or f"{topic}/{partition}/{offset}",
        ce_type=found.get("ce_type", ""),
        ce_source=found.get("ce_source", "external"),
        ce_time=found.get("ce_time", ""),
        trace_id=parse_traceparent(found.get("traceparent")) or new_trace_id(),
        id_given=given is not None,
    )
