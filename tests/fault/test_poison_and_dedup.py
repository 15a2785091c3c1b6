"""Poison and forged input on the real platform: oversized and broken records are
dead-lettered alone in letters that fit the broker, valid records keep flowing, and a
forged ce_id or a reused record id never makes a legitimate record vanish."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from cli.kafka_io import follower
from cli.platform import Platform
from contracts.events import PredictionMade, RecordRejected
from contracts.topics import Topic
from shared.dead_letters import DEAD_LETTER_MAX_BYTES
from tests.fault.conftest import PlatformFactory

GOOD = {"salary": 50_000.0, "commission": 0.0, "age": 40, "elevel": 2, "car": 3, "zipcode": 4,
        "hvalue": 200_000.0, "hyears": 10, "loan": 100_000.0}
Messages = dict[str, list[ConsumerRecord[bytes, bytes]]]


def body(record_id: str, **features: Any) -> dict[str, Any]:
    return {"dataset": "loans", "record_id": record_id, "features": {**GOOD, **features},
            "label": 1}


def encoded(record_id: str, **features: Any) -> bytes:
    return json.dumps(body(record_id, **features)).encode()


@pytest.fixture(scope="module")
def platform(platform_factory: PlatformFactory) -> Platform:
    return platform_factory()


async def read_until(bootstrap: str, topic: Topic, done: Callable[[Messages], bool],
                     timeout: float = 60.0) -> Messages:
    """Every message of `topic` by key, read from the start until `done` holds (the timeout
    only guards against a hang; a test that reaches it fails on its own assertions)."""
    found: Messages = {}
    deadline = time.monotonic() + timeout
    async with follower(bootstrap, [topic]) as consumer:
        while not done(found) and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                for message in messages:
                    key = message.key.decode("utf-8", "replace") if message.key else ""
                    found.setdefault(key, []).append(message)
        await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive now
        for messages in (await consumer.getmany(timeout_ms=500)).values():
            for message in messages:
                key = message.key.decode("utf-8", "replace") if message.key else ""
                found.setdefault(key, []).append(message)
    return found


def has(*keys: str) -> Callable[[Messages], bool]:
    return lambda found: set(keys) <= set(found)


async def produce(bootstrap: str, messages: list[tuple[str, bytes]],
                  topic: Topic = Topic.DATA_LABELED) -> None:
    """Send header-less, as any outside producer may, to one partition, as one burst."""
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await client.start()
    try:
        sent = [await client.send(topic.value, value, key=key.encode(), partition=0)
                for key, value in messages]
        await asyncio.gather(*sent)
    finally:
        await client.stop()


def letter(found: Messages, key: str) -> RecordRejected:
    [message] = found[key]
    assert len(message.value) < DEAD_LETTER_MAX_BYTES, (key, len(message.value))
    return RecordRejected.model_validate_json(message.value)


def test_oversized_records_get_letters_that_fit_and_valid_ones_flow(platform: Platform) -> None:
    """Today's reproduction: their letters (1.35 MB with every field error) were retried
    forever as 'dead-letter topic unreachable', and ingestion stopped on the partition."""
    bootstrap = platform.bootstrap or ""
    features = {f"x{i:05d}": 0 for i in range(10_000)}  # ~130 KB
    oversized = [("huge-features", encoded("huge-features", **features)),
                 ("huge-string", encoded("huge-string", age="x" * 300_000))]
    assert len(oversized[0][1]) > 120_000
    valid = [(f"next-{i}", encoded(f"next-{i}")) for i in range(10)]
    asyncio.run(produce(bootstrap, oversized + valid))

    rejected = asyncio.run(read_until(bootstrap, Topic.DATA_REJECTED,
                                      has("huge-features", "huge-string")))
    wide = letter(rejected, "huge-features")
    assert wide.errors[-1].message == "[cut: 9,900 more field errors]"
    assert "more problems]" in wide.reason
    long = letter(rejected, "huge-string")
    assert [e.field for e in long.errors] == ["features.age"]
    assert "payload truncated" in long.reason
    keys = [key for key, _ in valid]
    validated = asyncio.run(read_until(bootstrap, Topic.DATA_VALIDATED, has(*keys)))
    assert set(keys) <= set(validated), sorted(set(keys) - set(validated))


def test_a_400_digit_integer_is_dead_lettered_alone_and_its_batch_goes_on(
        platform: Platform) -> None:
    """Today's reproduction: float() raised OverflowError, and after 5 tries the whole
    batch (40 valid records) was dead-lettered."""
    bootstrap = platform.bootstrap or ""
    before = [(f"before-{i}", encoded(f"before-{i}")) for i in range(20)]
    after = [(f"after-{i}", encoded(f"after-{i}")) for i in range(20)]
    overflow = ("overflow", encoded("overflow", age=10 ** 400 - 1))
    assert b"9" * 400 in overflow[1]
    asyncio.run(produce(bootstrap, [*before, overflow, *after]))

    rejected = asyncio.run(read_until(bootstrap, Topic.DATA_REJECTED, has("overflow")))
    huge = letter(rejected, "overflow")
    assert [e.field for e in huge.errors] == ["features.age"]
    assert "integer of 400 digits" in huge.reason
    valid = [key for key, _ in before + after]
    validated = asyncio.run(read_until(bootstrap, Topic.DATA_VALIDATED, has(*valid)))
    assert set(valid) <= set(validated), sorted(set(valid) - set(validated))
    assert "overflow" not in validated
    assert not set(valid) & set(rejected)


def test_a_forged_ce_id_does_not_erase_the_next_record(platform: Platform) -> None:
    """The forger names, as its ce_id, the coordinates the next header-less record gets."""
    bootstrap = platform.bootstrap or ""
    topic = Topic.DATA_LABELED.value

    async def attack() -> int:
        client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await client.start()
        try:
            pad = await client.send_and_wait(topic, encoded("pad-1"), key=b"pad-1", partition=0)
            forged = f"{topic}/0/{pad.offset + 2}".encode()
            await client.send_and_wait(topic, encoded("forger-1"), key=b"forger-1",
                                       partition=0, headers=[("ce_id", forged)])
            await read_until(bootstrap, Topic.DATA_VALIDATED, has("forger-1"))  # handled
            victim = await client.send_and_wait(topic, encoded("victim-1"), key=b"victim-1",
                                                partition=0)
            return int(victim.offset - pad.offset)
        finally:
            await client.stop()

    assert asyncio.run(attack()) == 2  # the forged id named exactly the victim's coordinates
    validated = asyncio.run(read_until(bootstrap, Topic.DATA_VALIDATED, has("victim-1")))
    assert len(validated.get("victim-1", [])) == 1, "the legitimate record vanished"


def test_a_reused_record_id_with_other_content_is_dead_lettered(platform: Platform) -> None:
    bootstrap = platform.bootstrap or ""
    asyncio.run(produce(bootstrap, [("conflict-1", encoded("conflict-1"))]))
    asyncio.run(read_until(bootstrap, Topic.DATA_VALIDATED, has("conflict-1")))
    asyncio.run(produce(bootstrap, [("conflict-1", encoded("conflict-1", age=41)),
                                    ("conflict-1", encoded("conflict-1")),  # a true duplicate
                                    ("conflict-2", encoded("conflict-2"))]))

    rejected = asyncio.run(read_until(bootstrap, Topic.DATA_REJECTED, has("conflict-1")))
    conflict = letter(rejected, "conflict-1")
    assert conflict.reason.startswith("duplicate id with different content")
    assert json.loads(conflict.value_text or "")["features"]["age"] == 41
    validated = asyncio.run(read_until(bootstrap, Topic.DATA_VALIDATED, has("conflict-2")))
    assert len(validated["conflict-1"]) == 1
    assert json.loads(validated["conflict-1"][0].value)["features"]["age"] == 40


def test_monitoring_dead_letters_a_forged_prediction_and_goes_on(platform: Platform) -> None:
    bootstrap = platform.bootstrap or ""

    def made(prediction_id: str) -> bytes:
        return PredictionMade(prediction_id=prediction_id, model="loans-tree", version=1,
                              features=GOOD, prediction=1,
                              latency_seconds=0.0).model_dump_json().encode()

    forged = made("forged-1").replace(b'"age":40', b'"age":' + b"9" * 400)
    nan = made("forged-2").replace(b'"salary":50000.0', b'"salary":NaN')
    valid = [(f"fine-{i}", made(f"fine-{i}")) for i in range(10)]
    asyncio.run(produce(bootstrap, [("forged-1", forged), ("forged-2", nan), *valid],
                        Topic.PREDICTIONS))

    rejected = asyncio.run(read_until(bootstrap, Topic.DATA_REJECTED,
                                      has("forged-1", "forged-2")))
    assert letter(rejected, "forged-1").rejected_by == "monitoring"
    assert [e.field for e in letter(rejected, "forged-1").errors] == ["features.age"]
    assert [e.field for e in letter(rejected, "forged-2").errors] == ["features.salary"]
    assert not {f"fine-{i}" for i in range(10)} & set(rejected)

    deadline = time.monotonic() + 30  # a hang guard: the valid ones wait in the join
    pending = 0
    while time.monotonic() < deadline:
        status = httpx.get(f"{platform.url('monitoring')}/v1/status", timeout=5).json()
        pending = status["pending_joins"]
        if pending >= 10:
            break
        time.sleep(0.5)
    assert pending >= 10
