"""Starting and stopping the whole platform: the broker (unless one is given) and the five
services, each its own process, stopped by its own PID. Used by `make up` (through
cli/supervisor.py, which restarts crashed children), the demo and the tests (which pass free
ports, so they never collide with a running `make up`).

Every child gets a death signal (shared/processes.py): if this process is killed -9, its
children go too instead of keeping the ports.
"""

from __future__ import annotations

import importlib
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

from shared.broker import EmbeddedBroker, free_port, port_is_free
from shared.errors import BrokerPortInUse, PortInUse
from shared.processes import die_with_parent, terminate
from shared.settings import CommonSettings
from shared.signing import child_key_env, ensure_dev_keys
from shared.tokens import local_admin_env

logger = logging.getLogger(__name__)

SERVICES = ("registry", "ingestion", "training", "serving", "monitoring")
DEFAULT_PORTS = {"serving": 8000, "registry": 8001, "ingestion": 8002, "training": 8003,
                 "monitoring": 8004}

LogSink = Callable[[str, str], None]


def free_ports() -> dict[str, int]:
    """A free loopback port for every service."""
    return {name: free_port() for name in SERVICES}


def port_variable(service: str) -> str:
    """The environment variable that sets a service's port."""
    return f"DRIFTLOOP_{service.upper()}_PORT"


def service_port(service: str) -> int:
    """A service's port as its own settings class reads it (DRIFTLOOP_<SERVICE>_PORT)."""
    module = importlib.import_module(f"services.{service}.settings")
    settings = getattr(module, f"{service.capitalize()}Settings")()
    return int(settings.port)


def reachable(host: str) -> str:
    """The address a client uses to reach a server bound to `host` (URL form)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@dataclass
class Platform:
    """The broker and the five services as child processes."""

    config: Path
    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    bootstrap: str | None = None
    broker_port: int = 9092
    host: str = "127.0.0.1"
    broker_host: str = "127.0.0.1"
    registry_url: str | None = None
    sink: LogSink | None = None
    env: dict[str, str] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tails: dict[str, deque[str]] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def from_settings(cls, sink: LogSink | None = None) -> Platform:
        """The platform every documented DRIFTLOOP_* setting describes: project file, data
        dir, Kafka bootstrap (else the embedded broker's host and port), the host services
        bind, each service's port, and the registry URL (derived from the registry's port
        unless set)."""
        settings = CommonSettings()
        explicit = "registry_url" in settings.model_fields_set
        return cls(config=settings.config, data_dir=settings.data_dir,
                   ports={name: service_port(name) for name in SERVICES},
                   bootstrap=settings.kafka_bootstrap, host=settings.host,
                   broker_host=settings.embedded_broker_host,
                   broker_port=settings.embedded_broker_port, sink=sink,
                   registry_url=settings.registry_url if explicit else None)

    def url(self, service: str) -> str:
        return f"http://{reachable(self.host)}:{self.ports[service]}"

    def check_ports(self) -> None:
        """Refuse a taken or doubly used port before anything starts, naming the variable to
        change (a second `make up` must not report the first one's services as its own)."""
        seen: dict[int, str] = {}
        for name in SERVICES:
            port = self.ports[name]
            if port in seen:
                raise PortInUse(port=port, service=name, host=self.host,
                                variable=f"{port_variable(name)} (also {seen[port]}'s port)")
            seen[port] = name
            if not port_is_free(self.host, port):
                raise PortInUse(port=port, service=name, host=self.host,
                                variable=port_variable(name))
        if self.bootstrap is None and not port_is_free(self.broker_host, self.broker_port):
            raise BrokerPortInUse(host=self.broker_host, port=self.broker_port)

    def start(self, timeout: float = 120.0) -> None:
        """Start everything and wait until every service answers /readyz."""
        self.check_ports()
        try:
            if self.bootstrap is None:
                self.broker = EmbeddedBroker(self.broker_host, self.broker_port,
                                             self.data_dir / "logs" / "broker.log")
                self.broker.start()
                self.bootstrap = self.broker.bootstrap
            for name in SERVICES:
                self._spawn(name)
            self._wait_ready(SERVICES, timeout)
        except BaseException:
            self.stop()
            raise

    def child_env(self, name: str) -> dict[str, str]:
        """The environment service `name` of this platform runs with: settings, the admin
        token's digest, only the keys it may hold. A replica started beside the platform
        (a test's or a benchmark's own serving) starts from it too."""
        env = dict(os.environ)
        env.update(self.env)
        env.update(local_admin_env(self.data_dir))  # services accept the data dir's admin token
        env.update({
            "DRIFTLOOP_CONFIG": str(self.config.resolve()),
            "DRIFTLOOP_DATA_DIR": str(self.data_dir.resolve()),
            "DRIFTLOOP_KAFKA_BOOTSTRAP": str(self.bootstrap),
            "DRIFTLOOP_REGISTRY_URL": self.registry_url or self.url("registry"),
            "DRIFTLOOP_HOST": self.host,
            "PYTHONUNBUFFERED": "1",
        })
        for service, port in self.ports.items():
            env[port_variable(service)] = str(port)
        # Each service gets only the keys it may hold; on the embedded broker, dev key pairs.
        dev_keys = ensure_dev_keys(self.data_dir) if self.broker is not None else None
        return child_key_env(name, env, dev_keys)

    def _spawn(self, name: str) -> None:
        # Own session: a terminal's Ctrl-C reaches only us, and we stop the children in order.
        # SIGTERM on our death lets a service drain what it can (it bounds its own shutdown).
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=self.child_env(name),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM))
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
        with process.stdout, log_path.open("a", encoding="utf-8") as log:
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                tail.append(line)
                log.write(line + "\n")
                log.flush()
                if self.sink is not None:
                    self.sink(name, line)

    def _wait_ready(self, services: tuple[str, ...], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = set(services)
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

    def kill(self, service: str, signum: int = signal.SIGKILL, timeout: float = 60.0) -> int:
        """Send one service `signum` (SIGKILL: a fault to ride out) and reap it; returns its
        PID. A process still running after `timeout` is killed."""
        process = self.processes[service]
        process.send_signal(signum)
        terminate(process, timeout)
        return process.pid

    def respawn(self, service: str) -> None:
        """Start a service whose process has ended again, without waiting for it."""
        old = self.processes[service]
        if old.poll() is None:
            raise RuntimeError(f"{service} is still running (pid {old.pid})")
        old.wait()
        self._spawn(service)

    def restart(self, service: str, timeout: float = 120.0) -> None:
        """Start an ended service again and wait until it answers /readyz."""
        self.respawn(service)
        self._wait_ready((service,), timeout)

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
