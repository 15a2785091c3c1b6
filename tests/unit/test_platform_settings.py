"""`driftloop up` builds its platform from the documented DRIFTLOOP_* settings and refuses a
taken port, naming the variable to change, before it starts anything."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.platform import SERVICES, Platform, free_ports, reachable
from shared.broker import free_port
from shared.errors import BrokerPortInUse, PortInUse
from shared.processes import die_with_parent, pid_alive

PORTS = {"serving": 18000, "registry": 18001, "ingestion": 18002, "training": 18003,
         "monitoring": 18004}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("DRIFTLOOP_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_every_documented_setting_reaches_the_platform(clean_env: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    for name, port in PORTS.items():
        clean_env.setenv(f"DRIFTLOOP_{name.upper()}_PORT", str(port))
    clean_env.setenv("DRIFTLOOP_HOST", "0.0.0.0")
    clean_env.setenv("DRIFTLOOP_EMBEDDED_BROKER_HOST", "127.0.0.2")
    clean_env.setenv("DRIFTLOOP_EMBEDDED_BROKER_PORT", "19092")
    clean_env.setenv("DRIFTLOOP_DATA_DIR", str(tmp_path))
    clean_env.setenv("DRIFTLOOP_CONFIG", str(tmp_path / "p.toml"))
    platform = Platform.from_settings()
    assert platform.ports == PORTS
    assert (platform.host, platform.broker_host, platform.broker_port) == (
        "0.0.0.0", "127.0.0.2", 19092)
    assert (platform.data_dir, platform.config) == (tmp_path, tmp_path / "p.toml")
    assert platform.bootstrap is None
    assert platform.url("serving") == "http://127.0.0.1:18000"  # reachable, though bound wide
    env = platform.child_env("serving")
    assert env["DRIFTLOOP_REGISTRY_URL"] == "http://127.0.0.1:18001"  # follows its port
    assert env["DRIFTLOOP_HOST"] == "0.0.0.0"
    assert env["DRIFTLOOP_TRAINING_PORT"] == "18003"


def test_a_set_registry_url_and_cluster_are_passed_on(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DRIFTLOOP_REGISTRY_URL", "http://registry.internal:9000")
    clean_env.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", "kafka:9092")
    platform = Platform.from_settings()
    assert platform.ports == {"serving": 8000, "registry": 8001, "ingestion": 8002,
                              "training": 8003, "monitoring": 8004}
    env = platform.child_env("training")
    assert env["DRIFTLOOP_REGISTRY_URL"] == "http://registry.internal:9000"
    assert env["DRIFTLOOP_KAFKA_BOOTSTRAP"] == "kafka:9092"


@pytest.mark.parametrize(("host", "url_host"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"),
                                                ("::1", "[::1]"), ("10.0.0.5", "10.0.0.5")])
def test_urls_use_a_reachable_address(host: str, url_host: str) -> None:
    assert reachable(host) == url_host


@pytest.mark.parametrize("service", SERVICES)
def test_a_taken_port_names_its_variable(service: str, tmp_path: Path) -> None:
    platform = Platform(config=tmp_path / "p.toml", data_dir=tmp_path, ports=free_ports(),
                        broker_port=free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", platform.ports[service]))
        taken.listen()
        with pytest.raises(PortInUse) as refused:
            platform.start()
    message = str(refused.value)
    assert f"DRIFTLOOP_{service.upper()}_PORT" in message and "\n" not in message
    assert platform.broker is None and not platform.processes  # nothing was started


def test_a_taken_broker_port_and_a_shared_port_are_refused(tmp_path: Path) -> None:
    ports = free_ports()
    platform = Platform(config=tmp_path / "p.toml", data_dir=tmp_path, ports=ports,
                        broker_port=free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", platform.broker_port))
        taken.listen()
        with pytest.raises(BrokerPortInUse, match="DRIFTLOOP_EMBEDDED_BROKER_PORT"):
            platform.check_ports()
    platform.ports = {**ports, "training": ports["serving"]}
    with pytest.raises(PortInUse, match="DRIFTLOOP_SERVING_PORT .also training.s port"):
        platform.check_ports()


def test_a_child_dies_with_its_parent(tmp_path: Path) -> None:
    """The parent (a short Python) spawns a sleeping child with the death signal armed, prints
    its PID and is killed -9: the child must not outlive it."""
    script = ("import subprocess, sys, time\n"
              "from shared.processes import die_with_parent\n"
              "child = subprocess.Popen(['sleep', '300'], preexec_fn=die_with_parent())\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              cwd=Path(__file__).resolve().parents[2])
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert pid_alive(child)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    for _ in range(200):  # generous: the kernel signals at once; this only bounds a failure
        if not pid_alive(child):
            break
        time.sleep(0.05)
    assert not pid_alive(child)
    assert die_with_parent() is not None  # Linux: armed
