"""`driftloop up` as a supervisor: the real command in a subprocess, on ports chosen through
the environment and a private data directory. It honours the settings, restarts a child
killed -9 while the others keep running, leaves no child behind when it is itself killed -9,
and refuses a taken port before starting anything. `driftloop run` takes its embedded
broker down with it on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from cli.platform import SERVICES, free_ports
from shared.broker import free_port
from shared.processes import pid_alive

ROOT = Path(__file__).resolve().parents[2]
DRIFTLOOP = str(Path(sys.executable).parent / "driftloop")
DEADLINE = 120.0  # generous: two cores shared with other work; never a timing assertion


def children_of(pid: int) -> dict[int, str]:
    """Live direct children of `pid`, each with its command line (from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def role(cmdline: str) -> str:
    for name in SERVICES:
        if f"services.{name}" in cmdline:
            return name
    return "broker" if "broker" in cmdline else cmdline


def wait_for(check: object, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.3)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    broker_port: int
    data_dir: Path
    output: Path

    def roles(self) -> dict[str, int]:
        return {role(cmd): pid for pid, cmd in children_of(self.process.pid).items()}

    def supervisor_log(self) -> list[dict[str, object]]:
        path = self.data_dir / "logs" / "supervisor.log"
        return [orjson.loads(line) for line in path.read_text().splitlines() if line]


def environment(ports: dict[str, int], broker_port: int, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env.update({f"DRIFTLOOP_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env.update({"DRIFTLOOP_EMBEDDED_BROKER_PORT": str(broker_port),
                "DRIFTLOOP_DATA_DIR": str(data_dir),
                "DRIFTLOOP_CONFIG": str(ROOT / "driftloop.toml")})
    return env


def stop_and_reap(process: subprocess.Popen[bytes], pids: list[int]) -> None:
    """Stop what the test started, by PID; SIGKILL children that outlived it (and fail)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    survivors = [pid for pid in pids if pid_alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"children outlived driftloop: {survivors}"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data_dir = tmp_path_factory.mktemp("up")
    ports, broker_port = free_ports(), free_port()
    output = data_dir / "up.out"
    with output.open("wb") as sink:
        process = subprocess.Popen([DRIFTLOOP, "up", "--no-colour"], cwd=data_dir,
                                   env=environment(ports, broker_port, data_dir),
                                   stdout=sink, stderr=subprocess.STDOUT)
    running = Up(process, ports, broker_port, data_dir, output)
    seen: set[int] = set()
    try:
        wait_for(lambda: "driftloop is up." in output.read_text() or process.poll() is not None,
                 "driftloop up to say it is up")
        seen.update(running.roles().values())
        yield running
    finally:
        seen.update(running.roles().values())
        stop_and_reap(process, sorted(seen))


def test_up_honours_the_port_settings(up: Up) -> None:
    text = up.output.read_text()
    assert up.process.poll() is None, text
    for name, port in up.ports.items():
        assert f"http://127.0.0.1:{port}" in text, f"{name}'s URL is not the one set"
        assert ready(port), f"{name} does not answer on DRIFTLOOP_{name.upper()}_PORT={port}"
    assert f"127.0.0.1:{up.broker_port}" in text
    assert sorted(up.roles()) == sorted(["broker", *SERVICES])


def test_a_child_killed_9_is_restarted_and_the_others_keep_running(up: Up) -> None:
    before = up.roles()
    os.kill(before["ingestion"], signal.SIGKILL)
    wait_for(lambda: up.roles().get("ingestion", before["ingestion"]) != before["ingestion"],
             "ingestion to be started again")
    wait_for(lambda: ready(up.ports["ingestion"]), "the new ingestion to be ready")
    after = up.roles()
    assert up.process.poll() is None
    assert {k: v for k, v in after.items() if k != "ingestion"} == {
        k: v for k, v in before.items() if k != "ingestion"}, "another child was restarted"
    for name in SERVICES:
        assert ready(up.ports[name]), name
    events = [e for e in up.supervisor_log() if e.get("child") == "ingestion"]
    assert any(e.get("exit_code") == -signal.SIGKILL for e in events), events
    assert any(e.get("pid") == after["ingestion"] for e in events), events


def test_the_embedded_broker_killed_9_is_restarted_and_the_services_ride_it_out(
        up: Up) -> None:
    before = up.roles()
    os.kill(before["broker"], signal.SIGKILL)
    wait_for(lambda: up.roles().get("broker", before["broker"]) != before["broker"],
             "the broker to be started again")
    wait_for(lambda: all(ready(up.ports[name]) for name in SERVICES),
             "every service to be ready on the new broker", deadline=180)
    after = up.roles()
    assert {k: v for k, v in after.items() if k != "broker"} == {
        k: v for k, v in before.items() if k != "broker"}, "a service was restarted"
    with socket.create_connection(("127.0.0.1", up.broker_port), timeout=5):
        pass  # the same port as before
    events = [e for e in up.supervisor_log() if e.get("child") == "broker"]
    assert any(e.get("pid") == after["broker"] for e in events), events


def test_up_killed_9_leaves_no_child_behind(up: Up) -> None:
    pids = list(up.roles().values())
    assert len(pids) == 1 + len(SERVICES)
    os.kill(up.process.pid, signal.SIGKILL)
    up.process.wait()
    wait_for(lambda: not any(pid_alive(pid) for pid in pids),
             f"children {pids} to exit after their parent was killed")
    for port in up.ports.values():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # the ports are free again


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    ports, broker_port = free_ports(), free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["registry"]))
        taken.listen()
        result = subprocess.run([DRIFTLOOP, "up", "--no-colour"], cwd=tmp_path,
                                env=environment(ports, broker_port, tmp_path),
                                capture_output=True, timeout=DEADLINE)
    assert result.returncode != 0
    assert result.stdout == b""
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"port {ports['registry']} for registry is in use" in lines[0]
    assert "DRIFTLOOP_REGISTRY_PORT" in lines[0]
    assert not (tmp_path / "logs" / "broker.log").exists(), "something was started"


def test_run_stops_its_embedded_broker_on_sigterm(tmp_path: Path) -> None:
    ports, broker_port = free_ports(), free_port()
    process = subprocess.Popen([DRIFTLOOP, "run", "registry"], cwd=tmp_path,
                               env=environment(ports, broker_port, tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        wait_for(lambda: ready(ports["registry"]) or process.poll() is not None,
                 "the registry to be ready")
        pids = list(children_of(process.pid))
        assert [role(cmd) for cmd in children_of(process.pid).values()] == ["broker"]
        process.send_signal(signal.SIGTERM)
        process.wait(DEADLINE)
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), "the broker to stop")
    finally:
        stop_and_reap(process, pids)
