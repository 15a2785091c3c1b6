"""A dead letter always fits the broker, and a publish error about the message itself is
poison, never "broker unavailable": one message can no longer stop a consumer."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from pydantic import ValidationError

from contracts.events import LabeledRecord, RecordRejected
from contracts.topics import Topic
from services.ingestion.handlers import validate
from shared.bus import Bus
from shared.consumer import Consumer
from shared.dead_letters import (
    DEAD_LETTER_MAX_BYTES,
    MAX_ORIGINAL_BYTES,
    Source,
    build_letter,
    letter_key,
)
from shared.envelope import build_headers
from shared.errors import DependencyUnavailable, InvalidRecord, PublishRefused
from shared.settings import CommonSettings
from shared.validation import field_errors
from tests.unit.factories import T0, demo_project

KAFKA_LIMIT = 1024 * 1024
"""aiokafka's default max_request_size, and about the broker's default message limit."""


def wire_size(letter: RecordRejected, key: bytes | None) -> int:
    """Bytes the producer measures: value, key and headers."""
    headers = build_headers(letter, "ingestion")
    return (len(letter.model_dump_json().encode()) + len(key or b"")
            + sum(len(k) + len(v) for k, v in headers))


def source(value: bytes, key: bytes | None = b"rec-1") -> Source:
    return Source("data.labeled", 0, 42, key, value)


def rejected_record(body: dict[str, Any]) -> tuple[bytes, InvalidRecord]:
    raw = json.dumps(body).encode()
    with pytest.raises(InvalidRecord) as caught:
        validate(LabeledRecord.model_validate_json(raw), demo_project(), 0, T0)
    return raw, caught.value


def loans(**features: Any) -> dict[str, Any]:
    good = {"salary": 50_000.0, "commission": 0.0, "age": 40, "elevel": 2, "car": 3,
            "zipcode": 4, "hvalue": 200_000.0, "hyears": 10, "loan": 100_000.0}
    return {"dataset": "loans", "record_id": "rec-1", "features": {**good, **features},
            "label": 1}


# -- the letter builder ---------------------------------------------------------------------


def test_ten_thousand_undeclared_features_fit_and_say_what_was_cut() -> None:
    raw, exc = rejected_record(loans(**{f"undeclared_{i:05d}": i for i in range(10_000)}))
    assert len(raw) > 130_000 and len(exc.errors) == 10_000
    letter = build_letter(source(raw), str(exc), exc.errors, "ingestion")

    assert wire_size(letter, letter_key(source(raw))) < DEAD_LETTER_MAX_BYTES
    assert base64.b64decode(letter.value_base64) == raw  # the original, whole
    assert letter.errors[0].field == "features.undeclared_00000"
    assert letter.errors[-1].message == "[cut: 9,900 more field errors]"
    assert "[cut: 9,980 more problems]" in letter.reason


def test_a_300_kb_wrong_typed_string_is_not_repeated() -> None:
    raw, exc = rejected_record(loans(age="x" * 300_000))
    assert len(str(exc)) < 1_000  # the check itself repeats at most a few dozen characters
    letter = build_letter(source(raw), str(exc), exc.errors, "ingestion")

    assert wire_size(letter, b"rec-1") < DEAD_LETTER_MAX_BYTES
    assert [e.field for e in letter.errors] == ["features.age"]
    assert base64.b64decode(letter.value_base64) == raw[:MAX_ORIGINAL_BYTES]
    assert f"payload truncated: {len(raw):,} bytes, first {MAX_ORIGINAL_BYTES:,} kept" \
        in letter.reason
    assert letter.value_text is None


@pytest.mark.parametrize("max_bytes", [DEAD_LETTER_MAX_BYTES, 200_000, 20_000])
def test_every_part_at_its_worst_still_fits(max_bytes: int) -> None:
    """Control characters escape to six bytes each in JSON; every part is huge at once."""
    nasty = "\x01" * 50_000
    value = ("\x01" * 60_000).encode()  # valid UTF-8 below the text limit: kept as text too
    errors = [(nasty[:10_000] + str(i), nasty) for i in range(20_000)]
    src = source(value, key=b"\x01" * 1_000_000)
    letter = build_letter(src, nasty * 100, errors, "ingestion", max_bytes=max_bytes)

    assert wire_size(letter, letter_key(src)) < max_bytes
    assert letter.partition == 0 and letter.offset == 42
    assert letter.reason.startswith("\x01") and "[cut: " in letter.reason


def test_a_letter_too_large_even_without_its_parts_becomes_minimal() -> None:
    src = source(b"{}" * 1000)
    letter = build_letter(src, "bad" * 10_000, [("a", "b")] * 50, "ingestion",
                          max_bytes=3_000)
    assert letter.value_base64 == "" and letter.errors == []
    assert "minimal letter" in letter.reason
    assert (letter.source_topic, letter.partition, letter.offset) == ("data.labeled", 0, 42)


# -- publish errors -------------------------------------------------------------------------


class FakeProducer:
    """aiokafka's producer as the consumer meets it: refuses what `refuse` says."""

    def __init__(self, refuse: Any) -> None:
        self.refuse = refuse
        self.sent: list[bytes] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None,
                            headers: list[tuple[str, bytes]] | None = None) -> None:
        error = self.refuse(value, key)
        if error is not None:
            raise error
        self.sent.append(value)


def bus_with(refuse: Any) -> tuple[Bus, FakeProducer]:
    bus = Bus(CommonSettings(), "ingestion")
    producer = FakeProducer(refuse)
    bus._producer = producer
    return bus, producer


@pytest.mark.parametrize("error", [MessageSizeTooLargeError("too big"), RecordTooLargeError(),
                                   InvalidTopicError()])
async def test_an_error_about_the_message_is_poison(error: KafkaError) -> None:
    bus, _ = bus_with(lambda value, key: error)
    with pytest.raises(PublishRefused, match="the broker refused a data.rejected message"):
        await bus.publish_raw(Topic.DATA_REJECTED, b"{}", None, [])


@pytest.mark.parametrize("error", [KafkaConnectionError(), KafkaTimeoutError(),
                                   NotLeaderForPartitionError(),
                                   TopicAuthorizationFailedError()])
async def test_an_error_about_the_broker_is_retried(error: KafkaError) -> None:
    bus, _ = bus_with(lambda value, key: error)
    with pytest.raises(DependencyUnavailable):
        await bus.publish_raw(Topic.DATA_REJECTED, b"{}", None, [])


def record(value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("data.labeled", 1, 7, 0, 0, b"rec-1", value, None, 5, len(value), ())


def over(limit: int) -> Any:
    def refuse(value: bytes, key: bytes | None) -> KafkaError | None:
        size = len(value) + len(key or b"")
        return MessageSizeTooLargeError(f"{size} bytes") if size > limit else None
    return refuse


async def test_the_consumer_dead_letters_a_huge_record_under_the_kafka_limit() -> None:
    """Today's reproduction: a 1.35 MB letter was retried forever as 'unreachable'."""
    raw, exc = rejected_record(loans(**{f"undeclared_{i:05d}": i for i in range(10_000)}))
    bus, producer = bus_with(over(KAFKA_LIMIT))
    consumer = Consumer(bus, "ingestion", [Topic.DATA_LABELED], None)  # type: ignore[arg-type]
    await asyncio.wait_for(consumer._dead_letter(Topic.DATA_LABELED, record(raw), str(exc),
                                                 exc.errors), 30)  # a hang guard, not a timing
    [sent] = producer.sent
    assert base64.b64decode(RecordRejected.model_validate_json(sent).value_base64) == raw


async def test_a_refused_letter_falls_back_to_a_minimal_one() -> None:
    bus, producer = bus_with(over(2_000))  # a broker with a far smaller limit than ours
    consumer = Consumer(bus, "ingestion", [Topic.DATA_LABELED], None)  # type: ignore[arg-type]
    await asyncio.wait_for(consumer._dead_letter(Topic.DATA_LABELED, record(b"x" * 50_000),
                                                 "bad", []), 30)
    [sent] = producer.sent
    letter = RecordRejected.model_validate_json(sent)
    assert (letter.partition, letter.offset, letter.value_base64) == (1, 7, "")
    assert letter.reason.startswith("bad [minimal letter")


async def test_a_letter_refused_whatever_its_size_is_counted_and_the_consumer_goes_on() -> None:
    bus, producer = bus_with(lambda value, key: InvalidTopicError())
    consumer = Consumer(bus, "ingestion", [Topic.DATA_LABELED], None)  # type: ignore[arg-type]
    await asyncio.wait_for(consumer._dead_letter(Topic.DATA_LABELED, record(b"{}"), "bad", []),
                           30)
    assert producer.sent == []


def test_a_decode_error_does_not_echo_a_huge_value() -> None:
    raw = json.dumps({"dataset": "loans", "record_id": "r", "label": 1,
                      "features": {"a": ["x" * 300_000], "b" * 5_000: {}}})
    with pytest.raises(ValidationError) as caught:
        LabeledRecord.model_validate_json(raw)
    errors = field_errors(caught.value)
    assert [len(f) <= 201 and len(m) < 200 for f, m in errors] == [True, True]
    assert "[cut: 299,9" in errors[0][1]
