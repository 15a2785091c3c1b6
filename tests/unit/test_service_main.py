"""`python -m services.<name>` with a setting to fix prints one line and exits CONFIG_EXIT
(it used to print a traceback, once per restart under `driftloop up`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import CONFIG_EXIT

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("service", "variable"), [
    ("registry", "DRIFTLOOP_REGISTRY_SIGNING_KEY_FILE"),  # a real cluster needs every key
    ("serving", "DRIFTLOOP_SERVING_OUTBOX_CAPACITY"),  # a value pydantic refuses
])
def test_a_setting_to_fix_is_one_line_and_exit_code_2(tmp_path: Path, service: str,
                                                        variable: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env.update(DRIFTLOOP_DATA_DIR=str(tmp_path), DRIFTLOOP_CONFIG=str(ROOT / "driftloop.toml"),
               DRIFTLOOP_KAFKA_BOOTSTRAP="127.0.0.1:1")
    if variable.endswith("CAPACITY"):
        env[variable] = "not-a-number"
    done = subprocess.run([sys.executable, "-m", f"services.{service}"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == CONFIG_EXIT, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"driftloop {service}: ") and variable in lines[0]
