"""Turning pydantic validation errors into (field, message) pairs a person can read."""

from __future__ import annotations

from pydantic import ValidationError

from shared.records import shown

MAX_PATH_CHARS = 200
"""A field path is made of the sender's keys: it is cut like any repeated input."""

_UNION_MEMBERS = {"float", "int", "str", "bool"}
"""pydantic names the member of `FeatureValue` (float | int | str | bool) that failed in the
error location; a person wants the field, once."""


def field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """Each error as (dotted field path, message), one per field."""
    pairs: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        parts = [str(part) for part in error["loc"]]
        message = error["msg"]
        if error["type"] == "json_invalid":
            parts, message = [], f"not valid JSON ({error['ctx'].get('error', message)})"
        elif len(parts) > 1 and parts[-1] in _UNION_MEMBERS:
            parts = parts[:-1]
            message = f"expected a number, string or boolean, got {shown(error.get('input'))}"
        path = ".".join(parts)
        if len(path) > MAX_PATH_CHARS:
            path = f"{path[:MAX_PATH_CHARS]}…"
        pairs.setdefault(path, message)
    return list(pairs.items())
