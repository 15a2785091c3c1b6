"""Which partition a key lands on, the same for every driftloop producer.

crc32(key) mod the partition count, over the topic's partitions in order: the serving
outbox appends predictions with it, and the bus's producer uses it for every other event, so
a prediction and its feedback (both keyed by the prediction id, on topics with the same
partition count) land on the same partition number — co-partitioned, as a keyed join across
consumers needs. Kafka's default murmur2 would not match the outbox, and costs ~10 µs per
event in aiokafka's pure Python.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence


def partition_index(key: bytes, count: int) -> int:
    """The index, among `count` partitions in order, that `key` lands on."""
    return zlib.crc32(key) % count


def key_partitioner(key: bytes | None, all_partitions: Sequence[int],
                    available: Sequence[int]) -> int:
    """aiokafka's partitioner signature: a keyed event by `partition_index`, an unkeyed one
    on any available partition."""
    if key is None:
        return random.choice(list(available or all_partitions))
    ordered = sorted(all_partitions)
    return ordered[partition_index(key, len(ordered))]


def key_index(key: str, count: int) -> int:
    """`partition_index` of a text key (UTF-8), as the producers encode keys."""
    return partition_index(key.encode(), count)


def id_on_partition(base: str, partition: int, count: int) -> str:
    """`base` with a short hex suffix chosen so the id lands on `partition` of `count`.

    Serving names each prediction this way, on its model's partition: the prediction and
    its feedback (keyed by the id) then land where the model's decisions (keyed by its name)
    do, so one monitoring worker owns a whole model — its join, detectors and alerts — and
    workers in one group split models as Kafka splits partitions, with no repartition
    topic. About `count` crc32s of a short string per id."""
    for attempt in range(64 * count):
        candidate = f"{base}{attempt:x}"
        if partition_index(candidate.encode(), count) == partition:
            return candidate
    return base  # not reached for crc32 in practice: the id still works, on another partition
