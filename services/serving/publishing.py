"""Serving's prediction publisher: the outbox and the two delivery modes.

"fast" answers once the request's events are in the outbox; "acked" answers once the broker
acknowledged them. Either way a request first waits for room in a full outbox (then 503),
so nothing answered is ever dropped for lack of room.
"""

from __future__ import annotations

from contracts.events import AlertRaised, PredictionMade
from contracts.topics import Topic
from services.serving.handlers import Deliver, Event
from services.serving.settings import ServingSettings
from shared.bus import Bus
from shared.envelope import header_stamp
from shared.errors import InvalidFeatures
from shared.outbox import Batch, Outbox


def prediction_outbox(settings: ServingSettings, bus: Bus) -> Outbox:
    """The predictions outbox; its alerts go to the alerts topic through `bus`."""

    async def alert(event: AlertRaised) -> None:
        await bus.publish(Topic.ALERTS, event, key=event.model,
                          ce_id=f"{event.alert_id}/{event.status}")

    return Outbox(Topic.PREDICTIONS, settings.outbox_capacity, alert=alert)


def deliver_to(outbox: Outbox, settings: ServingSettings) -> Deliver:
    """The `Deliver` of the configured mode. The envelope's shared headers are built once per
    request (`header_stamp`); each event adds its ce_id, the prediction id (unique)."""
    wait = settings.outbox_wait_seconds
    limit = outbox.batch_bytes - 4096  # room for the key, headers and batch overhead
    acked = settings.prediction_delivery == "acked"

    async def deliver(events: list[Event]) -> None:
        for _, value in events:
            if len(value) > limit:
                raise InvalidFeatures(
                    detail=f"a prediction event would be {len(value)} bytes; at most {limit} "
                           "fit a Kafka record batch: send smaller feature values",
                    errors=[("features", "too large to publish")])
        await outbox.wait_for_room(wait)
        headers = header_stamp(PredictionMade, "serving")  # one time and trace per request
        batches: set[Batch] = set()
        for prediction_id, value in events:
            key = prediction_id.encode()
            batches.add(outbox.put(key, value, headers(key)))
        if acked:
            await outbox.acknowledged(batches)

    return deliver
