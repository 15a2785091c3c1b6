"""Kafka edge of ingestion: decode data.labeled batches, publish, store, reject."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from contracts.base import utcnow
from contracts.events import LabeledRecord
from contracts.topics import Topic
from services.ingestion.handlers import Ingestor
from services.ingestion.metrics import RECORDS
from shared.bus import Bus
from shared.consumer import BatchHandler, Delivery, Rejection
from shared.errors import DependencyUnavailable

logger = logging.getLogger(__name__)


def labeled_handler(bus: Bus, ingestor: Ingestor) -> BatchHandler:
    """The batch handler for data.labeled.

    Accepted records are published (acks=all) before they are appended to the
    store, and the offset is committed after both: a crash in between replays
    the batch, and the records, not yet in the store, are published again with
    the same ce_id, which consumers de-duplicate.
    """

    async def handle(batch: list[Delivery]) -> list[Rejection]:
        now = utcnow()
        records = [cast(LabeledRecord, d.event) for d in batch]
        outcome = ingestor.sort(records, now)
        by_id: dict[tuple[str, str], Delivery] = {}
        for record, delivery in zip(records, batch, strict=True):
            by_id.setdefault((record.dataset, record.record_id), delivery)
        sends = []
        for dataset, rows in outcome.accepted.items():
            for row in rows:
                trace = by_id[(dataset, row.record_id)].envelope.trace_id
                sends.append(bus.publish(Topic.DATA_VALIDATED, row, key=row.record_id,
                                         ce_id=f"{dataset}/{row.record_id}", trace_id=trace))
        await asyncio.gather(*sends)
        try:
            ingestor.store_accepted(outcome, now)
        except OSError as exc:  # disk full or unwritable: retry the batch, never drop it
            raise DependencyUnavailable(dependency="dataset store", detail=str(exc)) from exc
        accepted = sum(len(rows) for rows in outcome.accepted.values())
        RECORDS.labels("accepted").inc(accepted)
        RECORDS.labels("duplicate").inc(outcome.duplicates)
        RECORDS.labels("rejected").inc(len(outcome.rejected))
        return [Rejection(batch[index], str(exc), tuple(exc.errors))
                for index, exc in outcome.rejected.items()]

    return handle
