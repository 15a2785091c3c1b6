"""Starting and stopping the whole platform: the broker (unless one is given) and the five
services, each its own process, stopped by its own PID. Used by `make up`, the demo and the
integration tests (which pass free ports, so they never collide with a running `make up`)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.broker import EmbeddedBroker, free_port
from shared.processes import terminate
from shared.signing import child_key_env, ensure_dev_keys

logger = logging.getLogger(__name__)

SERVICES = ("registry", "ingestion", "training", "serving", "monitoring")
DEFAULT_PORTS = {"serving": 8000, "registry": 8001, "ingestion": 8002, "training": 8003,
                 "monitoring": 8004}

LogSink = Callable[[str, str], None]


def free_ports() -> dict[str, int]:
    """A free loopback port for every service."""
    return {name: free_port() for name in SERVICES}


@dataclass
class Platform:
    """The broker and the five services as child processes."""

    config: Path
    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    bootstrap: str | None = None
    broker_port: int = 9092
    host: str = "127.0.0.1"
    sink: LogSink | None = None
    env: dict[str, str] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tails: dict[str, deque[str]] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.ports[service]}"

    def start(self, timeout: float = 120.0) -> None:
        """Start everything and wait until every service answers /readyz."""
        try:
            if self.bootstrap is None:
                self.broker = EmbeddedBroker(self.host, self.broker_port,
                                             self.data_dir / "logs" / "broker.log")
                self.broker.start()
                self.bootstrap = self.broker.bootstrap
            for name in SERVICES:
                self._spawn(name)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _child_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update({
            "DRIFTLOOP_CONFIG": str(self.config.resolve()),
            "DRIFTLOOP_DATA_DIR": str(self.data_dir.resolve()),
            "DRIFTLOOP_KAFKA_BOOTSTRAP": str(self.bootstrap),
            "DRIFTLOOP_REGISTRY_URL": self.url("registry"),
            "DRIFTLOOP_HOST": self.host,
            "PYTHONUNBUFFERED": "1",
        })
        for service, port in self.ports.items():
            env[f"DRIFTLOOP_{service.upper()}_PORT"] = str(port)
        # Each service gets only the keys it may hold; on the embedded broker, dev key pairs.
        dev_keys = ensure_dev_keys(self.data_dir) if self.broker is not None else None
        return child_key_env(name, env, dev_keys)

    def _spawn(self, name: str) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=self._child_env(name),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        tail: deque[str] = deque(maxlen=50)
        self._tails[name] = tail
        log_path = self.data_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        thread = threading.Thread(target=self._pump, args=(name, process, tail, log_path),
                                  daemon=True)
        thread.start()
        self._threads.append(thread)

    def _pump(self, name: str, process: subprocess.Popen[bytes], tail: deque[str],
              log_path: Path) -> None:
        assert process.stdout is not None
        with log_path.open("a", encoding="utf-8") as log:
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                tail.append(line)
                log.write(line + "\n")
                log.flush()
                if self.sink is not None:
                    self.sink(name, line)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = set(SERVICES)
        with httpx.Client(timeout=2.0) as client:
            while waiting:
                for name in sorted(waiting):
                    process = self.processes[name]
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited with code {process.returncode}:\n"
                                           + "\n".join(self._tails[name]))
                    try:
                        if client.get(f"{self.url(name)}/readyz").status_code == 200:
                            waiting.discard(name)
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    details = "\n".join(f"--- {n}:\n" + "\n".join(list(self._tails[n])[-10:])
                                        for n in sorted(waiting))
                    raise TimeoutError(f"not ready after {timeout:.0f}s: {sorted(waiting)}\n"
                                       + details)
                time.sleep(0.2)

    def restart_broker(self, down_seconds: float = 2.0) -> None:
        """Stop the embedded broker (losing every message) and start it on the same port:
        the fault services must ride out."""
        if self.broker is None:
            raise RuntimeError("only an embedded broker can be restarted")
        self.broker.stop()
        time.sleep(down_seconds)
        self.broker.start()

    def alive(self) -> dict[str, bool]:
        """Whether each started service process is still running."""
        return {name: p.poll() is None for name, p in self.processes.items()}

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each service by PID, wait, SIGKILL stragglers, then stop the broker."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            terminate(process, max(0.1, deadline - time.monotonic()))
        for thread in self._threads:
            thread.join(timeout=2)
        for process in self.processes.values():
            if process.stdout is not None:
                process.stdout.close()
        self.processes.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> Platform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
