"""Base classes and scalar types shared by every contract."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

FeatureValue = float | int | str | bool
"""A feature or label value as it travels in JSON: number, string or boolean."""


class Contract(BaseModel):
    """Base of every event and payload: immutable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def utcnow() -> datetime:
    """Timezone-aware now, so every timestamp serialises as RFC 3339 with an offset."""
    return datetime.now(UTC)
