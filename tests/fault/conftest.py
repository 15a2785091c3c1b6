"""Fault and attack suite: the real services on the embedded broker, attacked and killed as
an outsider would. Each test module builds the platform it needs with `platform_factory`
(free loopback ports, a private data directory, extra environment), and every process it
started is stopped by its own PID."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.platform import Platform, free_ports
from shared.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILE = ROOT / "driftloop.toml"

PlatformFactory = Callable[..., Platform]


@pytest.fixture(scope="module")
def platform_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformFactory]:
    """Start platforms on demand (`env` adds variables to every service); all are stopped,
    and their processes checked gone, when the module ends."""
    started: list[Platform] = []

    def start(env: dict[str, str] | None = None, config: Path = PROJECT_FILE,
              timeout: float = 120) -> Platform:
        running = Platform(config=config, data_dir=tmp_path_factory.mktemp("fault"),
                           ports=free_ports(), broker_port=free_port(), env=dict(env or {}))
        started.append(running)
        running.start(timeout=timeout)
        return running

    try:
        yield start
    finally:
        for running in started:
            pids = [process.pid for process in running.processes.values()]
            running.stop()
            for pid in pids:
                assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived stop()"
