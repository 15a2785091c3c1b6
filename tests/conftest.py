"""Marks every test under tests/integration with `integration` and under tests/fault with
`fault` (which starts real services too, so it is also `integration`): `pytest -m "not
integration"` runs the fast suite alone, `pytest -m fault` the fault and attack suite."""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION = Path(__file__).parent / "integration"
FAULT = Path(__file__).parent / "fault"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parents = Path(str(item.fspath)).parents
        if INTEGRATION in parents:
            item.add_marker(pytest.mark.integration)
        if FAULT in parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.fault)
