"""Small aiokafka helpers for the CLI and the demo: produce records, follow topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.base import Contract
from contracts.topics import Topic
from shared.envelope import build_headers


@asynccontextmanager
async def producer(bootstrap: str,
                   options: dict[str, Any] | None = None) -> AsyncIterator[AIOKafkaProducer]:
    """A producer; `options` are the security settings (CommonSettings.kafka_client_options)."""
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                              **(options or {}))
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def send_all(client: AIOKafkaProducer, topic: str, events: Iterable[tuple[str, Contract]],
                   source: str = "cli") -> int:
    """Publish (key, event) pairs and wait until the broker acknowledged every one."""
    futures = []
    for key, event in events:
        futures.append(await client.send(topic, event.model_dump_json().encode(),
                                         key=key.encode(), headers=build_headers(event, source)))
    await asyncio.gather(*futures)
    return len(futures)


@asynccontextmanager
async def follower(bootstrap: str, topics: list[Topic], prefix: str = "",
                   from_beginning: bool = True,
                   options: dict[str, Any] | None = None) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group (no rebalance to wait for) reading every partition."""
    client = AIOKafkaConsumer(*(t.qualified(prefix) for t in topics), bootstrap_servers=bootstrap,
                              group_id=None,
                              auto_offset_reset="earliest" if from_beginning else "latest",
                              enable_auto_commit=False, **(options or {}))
    await client.start()
    try:
        yield client
    finally:
        await client.stop()
