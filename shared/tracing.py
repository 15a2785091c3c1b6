"""Trace ids carried in ContextVars, and W3C traceparent headers.

One trace follows a request from the HTTP call to its prediction event, the
alert it contributes to, the retrain and the promotion.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def new_trace_id() -> str:
    """A random 128-bit trace id, hex."""
    return secrets.token_hex(16)


def parse_traceparent(value: str | None) -> str | None:
    """The trace id of a traceparent header, or None when it is absent or malformed."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip())
    return match.group(1) if match else None


def current_traceparent(trace_id: str | None = None) -> str:
    """A traceparent for an outgoing call: the given trace, else the current one (or a new
    one), and a new span."""
    trace_id = trace_id or trace_id_var.get() or new_trace_id()
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


def ensure_trace() -> str:
    """The current trace id, starting a trace when there is none."""
    trace_id = trace_id_var.get()
    if trace_id is None:
        trace_id = new_trace_id()
        trace_id_var.set(trace_id)
    return trace_id
