"""The embedded broker launcher: starts Tansu, answers metadata, stops by PID; a taken port
is a clear error."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.broker import EmbeddedBroker, free_port
from shared.errors import BrokerPortInUse


def test_broker_starts_answers_and_stops(tmp_path: Path) -> None:
    broker = EmbeddedBroker(port=free_port(), log_file=tmp_path / "broker.log")
    broker.start()
    process = broker.process
    assert process is not None

    async def topics() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    try:
        assert isinstance(asyncio.run(topics()), list)
    finally:
        broker.stop()
    assert process.poll() is not None


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerPortInUse, match=f"127.0.0.1:{port} is already in use.*"
                                                  "DRIFTLOOP_EMBEDDED_BROKER_PORT"):
            EmbeddedBroker(port=port).start()
