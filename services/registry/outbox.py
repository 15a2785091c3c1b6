"""The registry's outbox publisher: sends the events its decisions wrote to the database.

A decision and its lifecycle events are written in one transaction (RegistryStore.decide);
this loop sends the pending rows oldest first, waits for the broker's acknowledgement, then
marks each sent. It runs at start (what a crash or a broker outage left pending goes out
first), when woken after a decision, and every `poll` seconds (rows another replica wrote).
Delivery is at-least-once: a crash between the ack and the mark re-sends the row with the
same ce_id, which consumers de-duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from contracts.catalogue import CATALOGUE
from contracts.topics import Topic
from services.registry.store import OutboxRow, RegistryStore
from shared.envelope import build_headers
from shared.errors import DependencyUnavailable, InvalidInput

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the loop needs of the bus (a fake in tests)."""

    source: str

    async def publish_raw(self, topic: Topic, value: bytes, key: bytes | None,
                          headers: list[tuple[str, bytes]]) -> None: ...


class OutboxPublisher:
    """Sends pending outbox rows; `notify` wakes it after a decision was committed."""

    def __init__(self, store: RegistryStore, bus: Publisher, poll: float = 2.0,
                 max_backoff: float = 10.0) -> None:
        self.store = store
        self.bus = bus
        self.poll = poll
        self.max_backoff = max_backoff
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """A decision was committed: send it now rather than at the next poll."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Send until `stopping`; a last attempt is made once it is set, then what is left
        stays pending for the next start."""
        delay = 0.5
        while True:
            try:
                await self.flush()
                delay = 0.5
                wait = self.poll
            except DependencyUnavailable as exc:
                logger.warning("lifecycle events not published yet (%s); retrying in %.1fs",
                               exc, delay)
                wait, delay = delay, min(delay * 2, self.max_backoff)
            if stopping.is_set():
                return
            await self._sleep(stopping, wait)

    async def _sleep(self, stopping: asyncio.Event, seconds: float) -> None:
        wake = asyncio.ensure_future(self._wake.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait((wake, stop), timeout=seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (wake, stop):
                waiter.cancel()
        self._wake.clear()

    async def flush(self) -> int:
        """Send every pending row, oldest first; returns how many were sent. Stops at the
        first broker failure (DependencyUnavailable), so rows never overtake each other."""
        sent = 0
        while rows := await asyncio.to_thread(self.store.pending_events):
            for row in rows:
                try:
                    await self._send(row)
                except InvalidInput as exc:  # the broker refuses this message for itself
                    logger.error("lifecycle event %s cannot be published and is set aside: %s",
                                 row.ce_id, exc)
                    await asyncio.to_thread(self.store.mark_unsendable, row.id, str(exc))
                    continue
                await asyncio.to_thread(self.store.mark_sent, row.id)
                sent += 1
        return sent

    async def _send(self, row: OutboxRow) -> None:
        # The stored bytes go out as they are; the contract is only read for its ce_type.
        event = CATALOGUE[row.topic].model.model_validate_json(row.payload)
        await self.bus.publish_raw(row.topic, row.payload, row.key.encode(),
                                   build_headers(event, self.bus.source, row.ce_id,
                                                 row.trace_id))
