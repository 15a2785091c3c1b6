"""Turning pydantic validation errors into (field, message) pairs a person can read."""

from __future__ import annotations

from pydantic import ValidationError


def field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """Each error as (dotted field path, message)."""
    pairs: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "json_invalid":
            location, message = "", f"not valid JSON ({error['ctx'].get('error', message)})"
        pairs.append((location, message))
    return pairs
