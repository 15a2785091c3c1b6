"""Dead letters that always fit the broker: every part is bounded and says what was cut.

A dead letter repeats what was wrong with a message, and what was wrong can be as large
as the message allows (10,000 undeclared features, a 300 KB string echoed in a reason).
A letter the broker refuses would stop its consumer, so each part has its own cap, and
the serialised letter is then measured against `max_bytes` and shrunk further (text copy,
field errors, original bytes) until it fits. `minimal_letter` is the last resort:
coordinates and a short reason only. `send_dead_letter` is the Kafka edge of all this.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass

from aiokafka import ConsumerRecord

from contracts.events import FieldError, RecordRejected
from contracts.topics import Topic
from shared.bus import Bus
from shared.envelope import build_headers
from shared.errors import DependencyUnavailable, PublishRefused
from shared.metrics import DEAD_LETTERS, EVENTS_DROPPED

logger = logging.getLogger(__name__)

DEAD_LETTER_MAX_BYTES = 900 * 1024
"""A serialised letter plus its key stays below this: Kafka's default limit is 1 MiB, and
the record's own framing and headers need the rest."""
HEADERS_ALLOWANCE = 2 * 1024
"""Room kept for the CloudEvents headers (about 300 bytes in practice)."""
MAX_ORIGINAL_BYTES = 256 * 1024
"""Original bytes kept (base64 grows them by a third)."""
MAX_TEXT_BYTES = 64 * 1024
"""Up to this size the original is also given as text, for people reading the topic."""
MAX_REASON_CHARS = 4_000
MAX_FIELD_ERRORS = 100
MAX_FIELD_CHARS = 200
MAX_MESSAGE_CHARS = 500
MAX_KEY_BYTES = 512
"""The letter's Kafka key and its `key` field: the original key, cut to this."""


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text) - limit:,} more characters]"


@dataclass(frozen=True, slots=True)
class Source:
    """Where the refused message was read, and its bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def letter_key(source: Source) -> bytes | None:
    """The Kafka key of the letter: the original key, bounded."""
    return source.key[:MAX_KEY_BYTES] if source.key else None


def _key_text(source: Source) -> str | None:
    if not source.key:
        return None
    text = source.key[:MAX_KEY_BYTES].decode("utf-8", "replace")
    if len(source.key) > MAX_KEY_BYTES:
        text += f"… [cut: {len(source.key) - MAX_KEY_BYTES:,} more bytes]"
    return text


def _bounded_errors(errors: list[tuple[str, str]], keep: int) -> list[FieldError]:
    kept = [FieldError(field=clip(f, MAX_FIELD_CHARS), message=clip(m, MAX_MESSAGE_CHARS))
            for f, m in errors[:keep]]
    if len(errors) > keep:
        kept.append(FieldError(field="", message=f"[cut: {len(errors) - keep:,} more field "
                                                 "errors]"))
    return kept


def build_letter(source: Source, reason: str, errors: list[tuple[str, str]],
                 rejected_by: str, max_bytes: int = DEAD_LETTER_MAX_BYTES) -> RecordRejected:
    """A letter for `source` whose JSON, with its key and headers, is below `max_bytes`."""
    budget = max_bytes - HEADERS_ALLOWANCE - len(letter_key(source) or b"")
    original = source.value or b""
    kept = original[:MAX_ORIGINAL_BYTES]
    with_text = len(kept) <= MAX_TEXT_BYTES
    keep_errors = MAX_FIELD_ERRORS
    reason = clip(reason, MAX_REASON_CHARS)
    while True:
        notes = []
        if len(kept) < len(original):
            notes.append(f"payload truncated: {len(original):,} bytes, first {len(kept):,} kept")
        if not with_text and len(kept) <= MAX_TEXT_BYTES:
            notes.append("text copy omitted to fit")
        text: str | None = None
        if with_text:
            try:
                text = kept.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        letter = RecordRejected(
            source_topic=clip(source.topic, MAX_FIELD_CHARS), partition=source.partition,
            offset=source.offset, key=_key_text(source),
            value_base64=base64.b64encode(kept).decode(), value_text=text,
            reason=reason + "".join(f" [{note}]" for note in notes),
            errors=_bounded_errors(errors, keep_errors), rejected_by=rejected_by)
        if len(letter.model_dump_json().encode()) < budget:
            return letter
        # Shrink the largest optional part first: the text copy, the field errors, then
        # the original bytes (halved each time; base64 keeps them exact).
        if with_text and text is not None:
            with_text = False
        elif keep_errors > 10:
            keep_errors = 10
        elif keep_errors > 0:
            keep_errors = 0
        elif kept:
            kept = kept[:len(kept) // 2]
        else:
            return minimal_letter(source, reason, rejected_by)


def minimal_letter(source: Source, reason: str, rejected_by: str) -> RecordRejected:
    """Coordinates and a short reason: what is left when a full letter is refused."""
    return RecordRejected(
        source_topic=clip(source.topic, MAX_FIELD_CHARS), partition=source.partition,
        offset=source.offset, key=None, value_base64="",
        reason=clip(reason, 500) + " [minimal letter: the original is only at its source "
                                   "coordinates]",
        rejected_by=rejected_by)


async def send_dead_letter(bus: Bus, topic: Topic, record: ConsumerRecord, reason: str,
                           errors: list[tuple[str, str]],
                           max_bytes: int = DEAD_LETTER_MAX_BYTES) -> None:
    """Send a bounded letter for `record`; if the broker still refuses it, a minimal one; if
    that is refused too, log and count the loss and go on — a consumer never stops on one
    message. Waits out an unreachable broker (the letter must not be lost)."""
    source = Source(record.topic, record.partition, record.offset, record.key, record.value)
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    logger.warning("dead-lettered %s: %s", where, clip(reason, 500))
    letter = build_letter(source, reason, errors, bus.source, max_bytes)
    try:
        await _publish(bus, letter, letter_key(source))
    except PublishRefused as exc:
        logger.error("the dead letter of %s was refused (%s); sending a minimal one", where, exc)
        try:
            await _publish(bus, minimal_letter(source, reason, bus.source), None)
        except PublishRefused as again:
            logger.error("the minimal dead letter of %s was refused too (%s); the message is "
                         "only at its source coordinates", where, again)
            EVENTS_DROPPED.labels(Topic.DATA_REJECTED.value, "dead_letter_refused").inc()
            return
    DEAD_LETTERS.labels(topic.value).inc()


async def _publish(bus: Bus, letter: RecordRejected, key: bytes | None) -> None:
    while True:
        try:
            await bus.publish_raw(Topic.DATA_REJECTED, letter.model_dump_json().encode(), key,
                                  build_headers(letter, bus.source))
            return
        except DependencyUnavailable:
            logger.warning("dead-letter topic unreachable; retrying")
            await asyncio.sleep(1.0)
