"""Bus.publish_many: several independent events, one wait for all their acknowledgements; a
message the broker refuses as such is returned (poison), a broker failure raises (retry)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from contracts.events import Feedback
from contracts.topics import Topic
from shared.bus import Bus
from shared.errors import DependencyUnavailable
from shared.settings import CommonSettings


class Producer:
    """Hands back a future per send; `outcome` says what the broker will answer for each."""

    def __init__(self, outcome: dict[str, BaseException | None]) -> None:
        self.outcome = outcome
        self.sent: list[tuple[str, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes, *, key: bytes,
                   headers: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        self.sent.append((topic, key))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def answer(self) -> None:
        for (_, key), future in zip(self.sent, self.futures, strict=True):
            error = self.outcome.get(key.decode())
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def bus_with(producer: Producer) -> Bus:
    bus = Bus(CommonSettings(kafka_bootstrap="127.0.0.1:1"), "test")
    bus._producer = producer  # type: ignore[assignment]
    return bus


def events(*keys: str) -> list[Any]:
    return [(Topic.FEEDBACK, Feedback(prediction_id=k, label=1), k, f"id-{k}", None)
            for k in keys]


async def publish(bus: Bus, producer: Producer, keys: tuple[str, ...]) -> Any:
    task = asyncio.create_task(bus.publish_many(events(*keys)))
    while len(producer.sent) < len(keys):
        await asyncio.sleep(0)
    assert not task.done()  # every event is sent before any acknowledgement is awaited
    producer.answer()
    return await task


async def test_all_sent_then_all_acknowledged() -> None:
    producer = Producer({})
    assert await publish(bus_with(producer), producer, ("a", "b", "c")) == []
    assert [key for _, key in producer.sent] == [b"a", b"b", b"c"]


async def test_a_message_refused_as_such_is_returned_not_raised() -> None:
    producer = Producer({"b": MessageSizeTooLargeError()})
    [refused] = await publish(bus_with(producer), producer, ("a", "b", "c"))
    assert "MessageSizeTooLargeError" in str(refused)


async def test_a_broker_failure_raises_to_retry_them_all() -> None:
    producer = Producer({"c": KafkaTimeoutError()})
    with pytest.raises(DependencyUnavailable):
        await publish(bus_with(producer), producer, ("a", "b", "c"))
