"""What every benchmark under bench/ does the same way: start the real platform (embedded
broker and the five services) on free loopback ports with a private data directory, and wait
until the registry has a champion. Stopping is Platform.stop: each child by its own PID."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from cli.platform import Platform, free_ports
from shared.broker import free_port


def start_platform(config: Path, data_dir: Path | None = None, timeout: float = 180,
                   env: dict[str, str] | None = None) -> Platform:
    """The platform of project file `config`, started and ready; its data and logs go to
    `data_dir` (a fresh temporary directory unless given)."""
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="driftloop-bench-"))
    platform = Platform(config=config, data_dir=data_dir, ports=free_ports(),
                        broker_port=free_port(), env=dict(env or {}))
    platform.start(timeout=timeout)
    return platform


def wait_champion(platform: Platform, model: str, timeout: float = 180) -> None:
    """Return once the registry names a champion of `model`."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=platform.url("registry"), timeout=5) as registry:
        while registry.get(f"/v1/models/{model}/champion").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"no champion of {model} after {timeout:.0f} s: see the logs "
                                 f"in {platform.data_dir / 'logs'}")
            time.sleep(0.5)
