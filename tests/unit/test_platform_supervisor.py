"""The supervisor's restart policy, against a fake platform and a fake clock: a child that
exits is restarted after a growing delay while the others are untouched; a crash loop is
given up loudly; a long run resets the count."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.platform import SERVICES
from cli.supervisor import RestartPolicy, Supervisor


@dataclass
class FakeProcess:
    pid: int
    code: int | None = None

    def poll(self) -> int | None:
        return self.code


@dataclass
class FakePlatform:
    """What the supervisor uses of a Platform: processes, respawn, broker, data_dir."""

    data_dir: Path = Path("/nonexistent")
    broker: None = None
    processes: dict[str, FakeProcess] = field(default_factory=dict)
    spawned: list[str] = field(default_factory=list)
    next_pid: int = 100

    def __post_init__(self) -> None:
        for name in SERVICES:
            self._new(name)

    def _new(self, name: str) -> None:
        self.next_pid += 1
        self.processes[name] = FakeProcess(self.next_pid)

    def respawn(self, name: str) -> None:
        assert self.processes[name].code is not None
        self.spawned.append(name)
        self._new(name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(policy: RestartPolicy) -> tuple[FakePlatform, Supervisor, Clock]:
    platform, clock = FakePlatform(), Clock()
    return platform, Supervisor(platform, policy, clock), clock  # type: ignore[arg-type]


def test_delays_double_up_to_the_bound_then_give_up() -> None:
    policy = RestartPolicy(base_delay=1, max_delay=5, max_fast_failures=5)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 5, 5, None]


def test_an_exited_child_is_restarted_after_its_delay_and_the_others_are_untouched(
        caplog: pytest.LogCaptureFixture) -> None:
    platform, supervisor, clock = make(RestartPolicy(base_delay=2))
    others = {n: p.pid for n, p in platform.processes.items() if n != "training"}
    platform.processes["training"].code = -9
    with caplog.at_level(logging.INFO, logger="cli.supervisor"):
        supervisor.tick()
        assert platform.spawned == []  # waits out the delay
        clock.now += 2
        supervisor.tick()
    assert platform.spawned == ["training"]
    assert {n: p.pid for n, p in platform.processes.items() if n != "training"} == others
    exited, restarted = (r for r in caplog.records if getattr(r, "child", "") == "training")
    assert exited.exit_code == -9 and exited.restart_in == 2  # type: ignore[attr-defined]
    assert restarted.pid == platform.processes["training"].pid  # type: ignore[attr-defined]


def test_a_crash_loop_is_given_up_loudly_and_the_others_keep_running(
        caplog: pytest.LogCaptureFixture) -> None:
    platform, supervisor, clock = make(RestartPolicy(base_delay=1, max_delay=1,
                                                     max_fast_failures=3, stable_after=60))
    with caplog.at_level(logging.INFO, logger="cli.supervisor"):
        for _ in range(4):
            platform.processes["registry"].code = 1
            supervisor.tick()  # notes the exit
            clock.now += 1
            supervisor.tick()  # restarts it, unless given up
    assert platform.spawned == ["registry"] * 3
    assert supervisor.children["registry"].given_up
    assert not supervisor.all_given_up()
    assert [r for r in caplog.records if r.levelno == logging.ERROR
            and "not restarting it" in r.getMessage()]
    platform.processes["serving"].code = 1
    supervisor.tick()
    clock.now += 1
    supervisor.tick()
    assert platform.spawned[-1] == "serving"  # others are still supervised


def test_a_long_run_resets_the_failure_count() -> None:
    platform, supervisor, clock = make(RestartPolicy(base_delay=1, max_fast_failures=2,
                                                     stable_after=60))
    for _ in range(5):
        platform.processes["serving"].code = 1
        clock.now += 61  # ran a minute before it failed
        supervisor.tick()
        clock.now += 1
        supervisor.tick()
    assert platform.spawned == ["serving"] * 5
    assert supervisor.children["serving"].failures == 1


def test_every_child_given_up_stops_up() -> None:
    platform, supervisor, clock = make(RestartPolicy(max_fast_failures=0))
    for process in platform.processes.values():
        process.code = 1
    supervisor.tick()
    assert supervisor.all_given_up()
    assert platform.spawned == []


def test_a_child_stopped_on_a_setting_to_fix_is_given_up_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """Exit code CONFIG_EXIT means 'fix a setting': restarting cannot help, so the supervisor
    says so once and leaves the others running."""
    from shared.settings import CONFIG_EXIT

    platform, supervisor, clock = make(RestartPolicy(base_delay=1))
    platform.processes["registry"].code = CONFIG_EXIT
    with caplog.at_level(logging.INFO, logger="cli.supervisor"):
        for _ in range(5):
            supervisor.tick()
            clock.now += 60
    assert platform.spawned == []
    assert supervisor.children["registry"].given_up
    assert not supervisor.all_given_up()
    assert any("setting to fix" in r.getMessage() for r in caplog.records)
