"""What training accepts, and where accepted requests wait: durable, on disk.

A request is accepted (counted against its model's retrain budget and parked in the
queue directory) before its offset is committed, so a crash never loses it; the consumer
then goes on at once, and one worker trains parked requests whose window has filled. A
window that never fills therefore holds nothing back but itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from contracts.base import utcnow
from contracts.events import AlertRaised, AlertStatus, Severity, TrainingRequested
from shared.files import atomic_write

logger = logging.getLogger(__name__)

HOUR = 3600.0


def safe_name(name: str) -> str:
    """A file name for an id that came from outside: readable, and distinct for distinct ids
    (the hash), so no request can take another's place by a look-alike id."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100]
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


class ParkedRequest(BaseModel):
    """An accepted request waiting for its window, with where it came from (for a dead
    letter if it is refused later) and, for progressive challengers, the rung it is on."""

    model_config = ConfigDict(frozen=True)

    request: TrainingRequested
    parked_at: datetime
    topic: str
    partition: int
    offset: int
    key: str | None = None
    trace_id: str
    attempts: int = 0
    rung: int = 0
    """Index of the ladder rung to train next (0 without a ladder): on disk, so a restart
    resumes the ladder there."""
    rung_since: datetime | None = None
    """When the current rung began waiting for its data (None: since `parked_at`)."""

    @property
    def waiting_since(self) -> datetime:
        return self.rung_since or self.parked_at


class RequestQueue:
    """Parked requests, one file each; survives restarts, so the park is re-derivable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, request_id: str) -> Path:
        return self.directory / f"{safe_name(request_id)}.json"

    def contains(self, request_id: str) -> bool:
        return self._path(request_id).exists()

    def put(self, parked: ParkedRequest) -> None:
        atomic_write(self._path(parked.request.request_id), parked.model_dump_json().encode())

    def remove(self, request_id: str) -> None:
        self._path(request_id).unlink(missing_ok=True)

    def waiting(self) -> list[ParkedRequest]:
        """Every parked request, oldest first (unreadable files are set aside, not fatal)."""
        found = []
        for path in self.directory.glob("*.json"):
            try:
                found.append(ParkedRequest.model_validate_json(path.read_bytes()))
            except (OSError, ValueError) as exc:
                logger.error("parked request %s unreadable (%s); moved aside", path.name, exc)
                path.rename(path.with_suffix(".unreadable"))
        return sorted(found, key=lambda p: p.parked_at)


class RetrainBudget:
    """Accepted requests per model in the last hour, in an append-only ledger per model.

    Keyed by request id, so a request replayed after a crash is not counted twice and a
    request accepted once is never refused on replay.
    """

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock
        self._ledgers: dict[str, dict[str, float]] = {}

    def _ledger(self, model: str) -> dict[str, float]:
        if model not in self._ledgers:
            entries: dict[str, float] = {}
            path = self.directory / f"{safe_name(model)}.jsonl"
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        item = json.loads(line)
                        entries[str(item["request_id"])] = float(item["at"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line after a crash
            self._ledgers[model] = entries
        return self._ledgers[model]

    def accepted(self, model: str, request_id: str) -> bool:
        return request_id in self._ledger(model)

    def used(self, model: str) -> int:
        """Requests of `model` accepted within the last hour."""
        since = self.clock() - HOUR
        return sum(1 for at in self._ledger(model).values() if at >= since)

    def record(self, model: str, request_id: str) -> None:
        """Count an accepted request (durably, before its offset is committed)."""
        ledger = self._ledger(model)
        if request_id in ledger:
            return
        now = self.clock()
        ledger[request_id] = now
        # Keep a day of entries (for the record), rewrite atomically: bounded and never torn.
        keep = {rid: at for rid, at in ledger.items() if at >= now - 24 * HOUR}
        self._ledgers[model] = keep
        text = "".join(json.dumps({"request_id": rid, "at": at}) + "\n"
                       for rid, at in keep.items())
        atomic_write(self.directory / f"{safe_name(model)}.jsonl", text.encode())


def park(request: TrainingRequested, topic: str, partition: int, offset: int,
         key: str | None, trace_id: str) -> ParkedRequest:
    return ParkedRequest(request=request, parked_at=utcnow(), topic=topic, partition=partition,
                         offset=offset, key=key, trace_id=trace_id)


def refusal_alert(request: TrainingRequested, summary: str, used: int,
                  limit: int) -> AlertRaised:
    """The alert of a request refused for its model's retrain budget."""
    # One alert id per refused request: a replay after a crash raises the same alert again.
    return AlertRaised(
        alert_id=f"al-{hashlib.sha256(request.request_id.encode()).hexdigest()[:12]}",
        status=AlertStatus.FIRING,
        severity=Severity.WARNING, kind="training_refused", model=request.model,
        summary=summary[:500],
        evidence={"request_id": request.request_id[:200], "reason": request.reason.value,
                  "requested_by": request.requested_by[:200], "used": used, "limit": limit},
        runbook=("Training requests for this model arrive faster than its retrain budget. "
                 "Check who writes training.requests (data.rejected holds the refused "
                 "requests); raise policy.max_retrains_per_hour only if this is expected."))
