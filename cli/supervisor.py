"""Keeping `driftloop up` running: a child that exits is logged and restarted with backoff,
and the others keep running.

A child that keeps failing soon after each start (a bad setting, a port taken after we
checked it) is a crash loop: after `max_fast_failures` in a row it is given up, loudly, and
the rest of the platform stays up. A run that lasted `stable_after` seconds resets the count.
The supervisor runs in the main thread: Linux sends a child's death signal when the thread
that forked it ends, so children must be spawned from a thread that lives as long as `up`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cli.platform import SERVICES, LogSink, Platform
from shared.logs import JsonFormatter
from shared.settings import CONFIG_EXIT

logger = logging.getLogger(__name__)

BROKER = "broker"


@dataclass(frozen=True)
class RestartPolicy:
    """How soon to restart a child that exited, and when to stop trying."""

    base_delay: float = 1.0
    """Delay before the first restart; doubled after each fast failure in a row."""
    max_delay: float = 30.0
    """Upper bound of the delay."""
    stable_after: float = 60.0
    """A run at least this long is not a crash loop: the failure count starts again."""
    max_fast_failures: int = 5
    """Fast failures in a row after which the child is given up."""

    def delay(self, failures: int) -> float | None:
        """Seconds to wait before restart number `failures` (1-based); None: give up."""
        if failures > self.max_fast_failures:
            return None
        return float(min(self.base_delay * 2 ** (failures - 1), self.max_delay))


@dataclass
class ChildState:
    """What the supervisor knows about one child between ticks."""

    started_at: float
    failures: int = 0
    restart_at: float | None = None
    given_up: bool = False
    restarts: int = 0


@dataclass
class Supervisor:
    """Watches the platform's children and restarts the ones that exit."""

    platform: Platform
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    clock: Callable[[], float] = time.monotonic
    children: dict[str, ChildState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = self.clock()
        names = ([BROKER] if self.platform.broker is not None else []) + list(SERVICES)
        self.children = {name: ChildState(started_at=now) for name in names}

    def _exit_code(self, name: str) -> int | None:
        if name == BROKER:
            broker = self.platform.broker
            process = broker.process if broker is not None else None
            return process.poll() if process is not None else -1
        return self.platform.processes[name].poll()

    def _pid(self, name: str) -> int | None:
        if name == BROKER:
            broker = self.platform.broker
            return broker.process.pid if broker is not None and broker.process else None
        return self.platform.processes[name].pid

    def _start(self, name: str) -> None:
        if name == BROKER:
            assert self.platform.broker is not None
            self.platform.broker.stop()  # reap the old process, close its log
            self.platform.broker.start()
        else:
            self.platform.respawn(name)

    def tick(self) -> None:
        """Note the children that exited since the last tick; restart the ones whose delay
        has passed."""
        for name, state in self.children.items():
            if state.given_up:
                continue
            now = self.clock()
            if state.restart_at is None:
                code = self._exit_code(name)
                if code is None:
                    continue
                self._exited(name, state, code, now)
            elif now >= state.restart_at:
                self._restart(name, state)

    def _exited(self, name: str, state: ChildState, code: int, now: float) -> None:
        ran = now - state.started_at
        state.failures = 1 if ran >= self.policy.stable_after else state.failures + 1
        delay = self.policy.delay(state.failures)
        fields = {"child": name, "exit_code": code, "ran_seconds": round(ran, 1),
                  "failures_in_a_row": state.failures}
        if code == CONFIG_EXIT and name != BROKER:  # a setting to fix: restarting cannot help
            state.given_up = True
            logger.error("%s stopped on a setting to fix (its last log line says which): not "
                         "restarting it; the others keep running", name, extra=fields)
            return
        if delay is None:
            state.given_up = True
            logger.error("%s keeps crashing (%d failures in a row, each within %.0fs of its "
                         "start): not restarting it; the others keep running. See its log "
                         "in %s", name, state.failures, self.policy.stable_after,
                         self.platform.data_dir / "logs", extra=fields)
            return
        state.restart_at = now + delay
        logger.warning("%s exited with code %s; restarting it in %.0fs (the others keep "
                       "running)%s", name, code, delay,
                       "; it kept messages in memory only: every message on it is lost"
                       if name == BROKER else "", extra={**fields, "restart_in": delay})

    def _restart(self, name: str, state: ChildState) -> None:
        try:
            self._start(name)
        except Exception as exc:  # a start that fails counts as a fast failure
            logger.error("%s could not be restarted: %s", name, exc, extra={"child": name})
            state.restart_at = None
            state.started_at = self.clock()
            self._exited(name, state, -1, state.started_at)
            return
        state.restart_at = None
        state.started_at = self.clock()
        state.restarts += 1
        logger.warning("%s restarted (pid %s, restart %d)", name, self._pid(name),
                       state.restarts, extra={"child": name, "pid": self._pid(name),
                                              "restarts": state.restarts})

    def all_given_up(self) -> bool:
        return all(state.given_up for state in self.children.values())

    def run(self, stop: threading.Event, interval: float = 0.5) -> int:
        """Supervise until `stop` is set (0) or every child was given up (1)."""
        while not stop.wait(interval):
            self.tick()
            if self.all_given_up():
                logger.error("every child was given up; stopping")
                return 1
        return 0


class SinkHandler(logging.Handler):
    """The supervisor's own records as JSON lines, shown like the services' lines and kept
    in <data dir>/logs/supervisor.log."""

    def __init__(self, sink: LogSink | None, log_path: Path) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("supervisor"))
        self.sink = sink
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(line + "\n")
            if self.sink is not None:
                self.sink("supervisor", line)
        except Exception:
            self.handleError(record)


def log_to(platform: Platform) -> SinkHandler:
    """Send the supervisor's and the platform's records to the platform's sink and log dir."""
    handler = SinkHandler(platform.sink, platform.data_dir / "logs" / "supervisor.log")
    for name in (__name__, "cli.platform", "shared.broker"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return handler
