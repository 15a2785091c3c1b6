"""Base classes and scalar types shared by every contract."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

FeatureValue = float | int | str | bool
"""A feature or label value as it travels in JSON: number, string or boolean."""


class Contract(BaseModel):
    """Base of every event and payload: immutable, and tolerant of unknown fields.

    Within a major version a contract only gains optional fields, so a consumer built
    against an older minor must accept (and ignore) fields it does not know yet.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")


class StrictContract(Contract):
    """What people and outside systems send us (labeled records, HTTP request bodies):
    an unknown field there is most likely a mistake, and is refused with its name."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def utcnow() -> datetime:
    """Timezone-aware now, so every timestamp serialises as RFC 3339 with an offset."""
    return datetime.now(UTC)
