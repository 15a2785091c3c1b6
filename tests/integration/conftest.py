"""One real platform per test module: the embedded broker and the five services as separate
processes, on free loopback ports and a private data directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli.platform import Platform, free_ports
from shared.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILE = ROOT / "driftloop.toml"


@contextmanager
def running_platform(config: Path, data_dir: Path) -> Iterator[Platform]:
    """A started platform for `config`; on exit every process it started is stopped and
    checked gone, by its own PID."""
    running = Platform(config=config, data_dir=data_dir, ports=free_ports(),
                       broker_port=free_port())
    running.start(timeout=120)
    pids = [process.pid for process in running.processes.values()]
    try:
        yield running
    finally:
        running.stop()
        for pid in pids:  # every service process was stopped and reaped, by its own PID
            assert not Path(f"/proc/{pid}").exists(), f"service process {pid} outlived stop()"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(PROJECT_FILE, tmp_path_factory.mktemp("platform")) as running:
        yield running
