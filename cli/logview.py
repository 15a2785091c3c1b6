"""Rendering the services' JSON log lines for a person watching `make up`."""

from __future__ import annotations

import orjson

_COLOURS = {"registry": 35, "ingestion": 36, "training": 33, "serving": 32, "monitoring": 34,
            "broker": 37}
_SKIP = {"ts", "level", "service", "logger", "msg", "trace_id", "event_id", "exc"}


def render(service: str, line: str, colour: bool = True) -> str:
    """`HH:MM:SS.mmm service  level message key=value … trace=…` from one JSON line."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict):
        text = f"{service:<10} {line}"
    else:
        extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _SKIP)
        trace = f" trace={entry['trace_id'][:8]}" if "trace_id" in entry else ""
        text = (f"{str(entry.get('ts', ''))[11:23]} {service:<10} "
                f"{str(entry.get('level', '')):<7} {entry.get('msg', '')}"
                f"{' ' + extras if extras else ''}{trace}")
        if "exc" in entry:
            text += "\n" + str(entry["exc"])
    if colour:
        return f"\x1b[{_COLOURS.get(service, 37)}m{text}\x1b[0m"
    return text
