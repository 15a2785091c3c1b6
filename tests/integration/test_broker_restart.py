"""Services ride out a restart of the (memory-only) embedded broker: nobody crashes, topics
are re-created, consumers rejoin, and the loop works again on fresh data."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
from river.datasets import synth

from cli.kafka_io import producer, send_all
from cli.platform import Platform
from contracts.events import LabeledRecord
from contracts.topics import Topic


def test_services_recover_after_the_broker_restarts(platform: Platform) -> None:
    platform.restart_broker()
    assert all(platform.alive().values())

    records = [LabeledRecord(dataset="loans", record_id=f"after-{i}", features=x, label=y)
               for i, (x, y) in enumerate(itertools.islice(synth.Agrawal(seed=5), 2100))]

    async def publish() -> None:
        async with producer(platform.bootstrap or "") as kafka:
            await send_all(kafka, Topic.DATA_LABELED.value, [(r.record_id, r) for r in records])

    asyncio.run(publish())
    deadline = time.monotonic() + 150  # rejoining waits out the forgotten group's session
    with httpx.Client(base_url=platform.url("serving")) as serving:
        while True:
            answer = serving.post("/v1/models/loans-tree/predict",
                                  json={"features": records[0].features})
            if answer.status_code == 200:
                break
            assert answer.status_code == 409, answer.text
            assert time.monotonic() < deadline, "no model trained and served after the restart"
            time.sleep(0.5)
    assert answer.json()["version"] == 1
    assert all(platform.alive().values()), platform.alive()
    for service in ("ingestion", "training", "registry", "serving", "monitoring"):
        log = (platform.data_dir / "logs" / f"{service}.log").read_text()
        assert "consumers rejoin" in log, f"{service} did not notice the restart"
