"""A service's stream state in a changelog topic, so a restarted worker resumes it exactly.

State is a map of keys to bytes. A checkpoint writes the keys that changed since the last
one (a tombstone for a key deleted) and then a marker holding the input offsets the state
reflects; the service commits its input offsets only up to a marker's. A change counts only
once a marker follows it, so a worker killed in the middle of a checkpoint leaves nothing
half-applied: the next one restores the last whole checkpoint and reads its inputs again from
the marker's offsets. Nothing fed before a marker is lost, nothing is applied twice.

Values and markers carry an HMAC-SHA256 tag under the service's own secret, bound to the
key: a changelog is a topic that anyone allowed to write it could fill, and a service may
keep pickled detectors in it (a pickle is code). A record whose tag does not match is
skipped and counted, never loaded. Tombstones carry no tag (compaction needs a null value):
write access to a changelog topic must be kept to its service (a Kafka ACL).

Restore reads the topic from the beginning until a fence record this worker wrote itself
comes back, rather than up to the high-water mark: the embedded broker's end offsets are not
to be trusted (see docs/ARCHITECTURE.md, *Messaging*). The topic has as many partitions as
the service's inputs; partition p holds the state of what arrives on input partition p, so
a worker restores the partitions it is assigned and nothing else. It is created with
`cleanup.policy=compact` where the broker takes topic configs, so real Kafka keeps the
newest value of each key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from shared.bus import Bus, _retry_start
from shared.errors import DependencyUnavailable
from shared.metrics import CHANGELOG_REJECTED
from shared.settings import require_bootstrap

logger = logging.getLogger(__name__)

MARKER = b"\x00checkpoint"
"""The key of the record that closes a checkpoint."""
FENCE_PREFIX = b"\x00fence/"
TAG_BYTES = 32
_TOPIC_EXISTS = 36


@dataclass
class Restored:
    """A whole checkpoint, as the last worker left it."""

    state: dict[bytes, bytes] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    """Input position the state reflects, as "topic/partition" → next offset to feed."""
    torn: set[bytes] = field(default_factory=set)
    """Keys a worker wrote after its last marker (it died mid-checkpoint): their values here
    are the last whole checkpoint's, to be written again so the log agrees."""
    records: int = 0


def tag(secret: bytes, key: bytes, value: bytes) -> bytes:
    """The authentication tag of `value` under `key`."""
    return hmac.new(secret, len(key).to_bytes(4, "big") + key + value, hashlib.sha256).digest()


def seal(secret: bytes, key: bytes, value: bytes) -> bytes:
    return tag(secret, key, value) + value


def unseal(secret: bytes, key: bytes, sealed: bytes) -> bytes | None:
    """The value, or None when its tag does not match (forged, tampered, another secret)."""
    value = sealed[TAG_BYTES:]
    if len(sealed) < TAG_BYTES or not hmac.compare_digest(sealed[:TAG_BYTES],
                                                          tag(secret, key, value)):
        return None
    return value


def fold(records: list[tuple[bytes, bytes | None]], secret: bytes) -> Restored:
    """The state a sequence of changelog records leaves: changes apply when a marker that
    follows them is read; what comes after the last marker is torn."""
    restored = Restored(records=len(records))
    tail: dict[bytes, bytes | None] = {}
    for key, sealed in records:
        if key.startswith(FENCE_PREFIX):
            continue
        if sealed is None:
            tail[key] = None
            continue
        value = unseal(secret, key, sealed)
        if value is None:
            CHANGELOG_REJECTED.inc()
            logger.error("changelog record %r does not carry this service's tag; skipped",
                         key[:80])
            continue
        if key != MARKER:
            tail[key] = value
            continue
        for changed, now in tail.items():
            if now is None:
                restored.state.pop(changed, None)
            else:
                restored.state[changed] = now
        tail.clear()
        restored.offsets = orjson.loads(value)["offsets"]
    restored.torn = set(tail)
    return restored


class Changelog:
    """One service's state topic: `restore` once at start, then `checkpoint` as it goes."""

    def __init__(self, bus: Bus, name: str, secret: bytes, partitions: int = 1,
                 timeout: float = 60.0) -> None:
        self.bus = bus
        self.name = f"{bus.settings.kafka_topic_prefix}{name}"
        self.secret = secret
        self.partitions = partitions
        self.timeout = timeout
        self.checkpoints = 0
        self.written = 0
        """Records written (changes and markers), for the changelog's cost."""
        self.bytes_written = 0

    async def ensure_topic(self) -> None:
        """Create the topic (one partition, compacted where the broker takes configs)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=require_bootstrap(self.bus.settings),
                                    **self.bus.settings.kafka_client_options())
        await _retry_start(admin.start, self.timeout, "admin client")
        try:
            if self.name in set(await admin.list_topics()):
                return
            topic = NewTopic(self.name, self.partitions,
                             self.bus.settings.kafka_replication_factor,
                             topic_configs={"cleanup.policy": "compact"})
            response = await admin.create_topics([topic])
            for name, code, message in getattr(response, "topic_errors", []):
                if code not in (0, _TOPIC_EXISTS):
                    raise DependencyUnavailable(dependency="kafka",
                                                detail=f"creating {name}: {message}")
        finally:
            await admin.close()

    async def restore(self, partitions: Iterable[int] = (0,)) -> Restored:
        """Read `partitions` whole, each up to a fence written now, and fold them."""
        await self.ensure_topic()
        wanted = sorted(set(partitions))
        fence = FENCE_PREFIX + uuid.uuid4().hex.encode()
        for partition in wanted:
            await self._send([(fence, b"")], partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=require_bootstrap(self.bus.settings),
                                    enable_auto_commit=False, group_id=None,
                                    **self.bus.settings.kafka_client_options())
        await _retry_start(consumer.start, self.timeout, "changelog reader")
        records: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in wanted}
        open_partitions = set(wanted)
        try:
            consumer.assign([TopicPartition(self.name, p) for p in wanted])
            await consumer.seek_to_beginning(*(TopicPartition(self.name, p) for p in wanted))
            deadline = time.monotonic() + self.timeout
            while open_partitions:
                if time.monotonic() > deadline:
                    raise DependencyUnavailable(
                        dependency="kafka", detail=f"{self.name}: the fence written at start "
                        f"did not come back within {self.timeout:g}s")
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for tp, messages in batches.items():
                    for message in messages:
                        if tp.partition not in open_partitions:
                            break
                        if message.key == fence:
                            open_partitions.discard(tp.partition)
                            break
                        records[tp.partition].append((message.key or b"", message.value))
        finally:
            await consumer.stop()
        restored = Restored()
        for partition in wanted:
            await self._send([(fence, None)], partition)  # compaction removes both
            part = fold(records[partition], self.secret)
            restored.state.update(part.state)
            restored.offsets.update(part.offsets)
            restored.torn |= part.torn
            restored.records += part.records
        logger.info("restored %d keys from %d records of %s partitions %s (%d torn)",
                    len(restored.state), restored.records, self.name, wanted,
                    len(restored.torn))
        return restored

    async def checkpoint(self, changes: Mapping[bytes, bytes | None],
                         offsets: Mapping[str, int], partition: int = 0) -> None:
        """Write `changes` (None deletes a key), then the marker that makes them count, to
        one partition."""
        marker = orjson.dumps({"offsets": dict(offsets), "at": time.time()})
        records: list[tuple[bytes, bytes | None]] = [
            (key, None if value is None else seal(self.secret, key, value))
            for key, value in changes.items()]
        records.append((MARKER, seal(self.secret, MARKER, marker)))
        await self._send(records, partition)
        self.checkpoints += 1
        self.written += len(records)
        self.bytes_written += sum(len(key) + len(value or b"") for key, value in records)

    async def _send(self, records: list[tuple[bytes, bytes | None]], partition: int) -> None:
        """Send in order, packed into record batches (~1 µs a record, where a `send` each
        costs ~30 µs), and wait for every acknowledgement. Batches to one partition leave
        in order: the producer keeps one request in flight per broker."""
        producer = self.bus.producer
        futures = []
        try:
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, self.name,
                                                             partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise DependencyUnavailable(
                            dependency="kafka", detail=f"{self.name}: a record of "
                            f"{len(value or b'')} bytes does not fit in a batch")
            if batch.record_count():
                futures.append(await producer.send_batch(batch, self.name,
                                                         partition=partition))
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise DependencyUnavailable(dependency="kafka",
                                        detail=f"{self.name}: {exc}") from exc
