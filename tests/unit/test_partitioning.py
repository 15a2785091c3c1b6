"""Every driftloop producer puts a key on the same partition: the serving outbox (predictions)
and the bus (feedback and every other event), so a prediction and its feedback co-partition."""

from __future__ import annotations

import uuid

import pytest

import shared.bus as bus_module
from services.monitoring.join import join_key
from shared.bus import Bus
from shared.partitioning import id_on_partition, key_index, key_partitioner, partition_index
from shared.settings import CommonSettings
from tests.unit.test_outbox import FakeProducer, settle, started


async def test_the_outbox_and_the_bus_put_a_prediction_id_on_the_same_partition() -> None:
    producer = FakeProducer(partitions=4)
    outbox = await started(producer)
    keys = [uuid.uuid4().hex.encode() for _ in range(200)]
    for key in keys:
        outbox.put(key, b"{}", [])
    await settle(outbox)
    shipped = {key: partition for partition, key, _ in producer.records()}
    assert {shipped[k] for k in keys} == {0, 1, 2, 3}  # spread over every partition
    for key in keys:  # the bus's producer, whatever order the client lists partitions in
        assert key_partitioner(key, [3, 1, 0, 2], [0, 1, 2, 3]) == shipped[key]
        assert shipped[key] == partition_index(key, 4)


def test_an_unkeyed_event_goes_to_an_available_partition() -> None:
    assert {key_partitioner(None, [0, 1, 2], [1]) for _ in range(20)} == {1}


async def test_the_bus_producer_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, object] = {}

    class Producer:
        def __init__(self, **options: object) -> None:
            captured.update(options)

        async def start(self) -> None:
            return None

    async def no_topics() -> None:
        return None

    monkeypatch.setattr(bus_module, "AIOKafkaProducer", Producer)
    bus = Bus(CommonSettings(kafka_bootstrap="127.0.0.1:1"), "test")
    monkeypatch.setattr(bus, "ensure_topics", no_topics)
    await bus.start()
    assert captured["partitioner"] is key_partitioner


@pytest.mark.parametrize("count", [1, 3, 12])
def test_serving_names_each_prediction_on_its_models_partition(count: int) -> None:
    """A prediction and its feedback (keyed by the id) land where the model's decisions
    (keyed by its name) do: one monitoring worker owns the whole model."""
    for model in ("loans-tree", "loans-logistic", "houses"):
        home = key_index(model, count)
        ids = {id_on_partition(uuid.uuid4().hex, home, count) for _ in range(200)}
        assert len(ids) == 200 and {key_index(i, count) for i in ids} == {home}


def test_a_long_id_is_kept_on_its_own_partition() -> None:
    """The join keeps a digest of an id over 64 characters; the digest is checkpointed on the
    partition the id itself arrived on."""
    long_id = "p" * 500
    key = join_key(long_id, 3)
    assert key.startswith("sha256:") and len(key) < 80
    assert key_index(key, 3) == key_index(long_id, 3)
