"""Bad input loses nothing: every bad record lands in data.rejected with its reason, valid
records keep flowing, duplicates are dropped, bad HTTP bodies get 422 naming the field."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from cli.kafka_io import follower
from cli.platform import Platform
from contracts.events import RecordRejected, RecordValidated
from contracts.topics import Topic

GOOD = {"salary": 50_000.0, "commission": 0.0, "age": 40, "elevel": 2, "car": 3, "zipcode": 4,
        "hvalue": 200_000.0, "hyears": 10, "loan": 100_000.0}


def _record(record_id: str, **changes: Any) -> bytes:
    body: dict[str, Any] = {"dataset": "loans", "record_id": record_id,
                            "features": dict(GOOD), "label": 1}
    features = changes.pop("features", {})
    body["features"].update(features)
    body.update(changes)
    for key in [k for k, v in body.items() if v is None]:
        del body[key]
    return json.dumps(body).encode()


BAD = {
    "bad-json": (b'{"dataset": "loans", "record_id": ', ["not valid JSON"]),
    "bad-type": (_record("bad-type", features={"age": "forty"}),
                 ["features.age", "expected a number"]),
    "bad-range": (_record("bad-range", features={"age": 500}),
                  ["features.age", "above the allowed maximum"]),
    "no-label": (_record("no-label", label=None), ["label", "Field required"]),
    "bad-dataset": (_record("bad-dataset", dataset="nope"), ["unknown dataset 'nope'"]),
}
GOOD_IDS = ["ok-1", "ok-2", "ok-3"]


async def _collect(bootstrap: str, topic: Topic, want: set[str],
                   timeout: float = 30.0) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    deadline = time.monotonic() + timeout
    async with follower(bootstrap, [topic]) as consumer:
        while not want <= set(found) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for messages in batches.values():
                for message in messages:
                    key = message.key.decode() if message.key else ""
                    found.setdefault(key, []).append(message.value)
        # linger a moment: anything extra (a duplicate) would arrive now
        await asyncio.sleep(1.0)
        for messages in (await consumer.getmany(timeout_ms=500)).values():
            for message in messages:
                key = message.key.decode() if message.key else ""
                found.setdefault(key, []).append(message.value)
    return found


async def _produce_all(bootstrap: str) -> None:
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await client.start()
    try:
        for record_id, (value, _) in BAD.items():
            await client.send_and_wait(Topic.DATA_LABELED.value, value, key=record_id.encode())
        for record_id in GOOD_IDS:
            await client.send_and_wait(Topic.DATA_LABELED.value, _record(record_id),
                                       key=record_id.encode())
        # the same record again: ingestion must drop it
        await client.send_and_wait(Topic.DATA_LABELED.value, _record("ok-1"), key=b"ok-1")
    finally:
        await client.stop()


def test_bad_records_are_dead_lettered_with_reasons_and_good_ones_flow(
        platform: Platform) -> None:
    bootstrap = platform.bootstrap or ""
    asyncio.run(_produce_all(bootstrap))

    rejected = asyncio.run(_collect(bootstrap, Topic.DATA_REJECTED, set(BAD)))
    for record_id, (original, expected) in BAD.items():
        assert record_id in rejected, f"{record_id} never reached data.rejected"
        letter = RecordRejected.model_validate_json(rejected[record_id][0])
        assert letter.source_topic == Topic.DATA_LABELED.value
        assert letter.rejected_by == "ingestion"
        assert base64.b64decode(letter.value_base64) == original  # the original bytes, intact
        for fragment in expected:
            assert fragment in letter.reason, (record_id, letter.reason)

    validated = asyncio.run(_collect(bootstrap, Topic.DATA_VALIDATED, set(GOOD_IDS)))
    assert set(GOOD_IDS) <= set(validated)
    assert not set(BAD) & set(validated)
    assert len(validated["ok-1"]) == 1, "the duplicate of ok-1 was validated again"
    record = RecordValidated.model_validate_json(validated["ok-2"][0])
    assert record.features["age"] == 40 and isinstance(record.features["salary"], float)


@pytest.mark.parametrize(("body", "field"), [
    ({"features": {k: v for k, v in GOOD.items() if k != "age"}}, "features.age"),
    ({"features": {**GOOD, "car": "three"}}, "features.car"),
    ({"instances": [GOOD, {**GOOD, "loan": None}]}, "instances.1.loan"),
    ({"feature": GOOD}, "features"),
])
def test_predict_with_a_bad_body_answers_422_naming_the_field(
        platform: Platform, body: dict[str, Any], field: str) -> None:
    response = httpx.post(f"{platform.url('serving')}/v1/models/loans-tree/predict", json=body)
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["fields"]]
    assert any(f.startswith(field) for f in fields), (field, response.json())


def test_unknown_model_is_404(platform: Platform) -> None:
    response = httpx.post(f"{platform.url('serving')}/v1/models/nope/predict",
                          json={"features": GOOD})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
