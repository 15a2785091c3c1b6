"""A training request can neither flood nor stall training: requests beyond a model's retrain
budget are refused (dead-lettered with the reason) and alerted, and a request whose window
never fills is parked while the requests behind it are trained."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cli.platform import Platform
from contracts.events import AlertRaised, DataWindow, TrainingReason, TrainingRequested
from contracts.topics import Topic
from tests.fault.conftest import PlatformFactory
from tests.fault.trust_helpers import events, letters, publish, read, signs, toy_project, wait_for

NEVER = 1_000_000  # no automatic first training: every request here is the test's own


@pytest.fixture(scope="module")
def platform(platform_factory: PlatformFactory, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Platform]:
    config = toy_project(tmp_path_factory.mktemp("project") / "flood.toml", {
        "flood": {"initial_training_records": NEVER, "max_retrains_per_hour": 2},
        "stall": {"initial_training_records": NEVER, "max_retrains_per_hour": 10}})
    running = platform_factory(config=config)
    bootstrap = running.bootstrap or ""
    publish(bootstrap, Topic.DATA_LABELED, [(r.record_id, r) for r in signs(100, False, 3, "r")])
    wait_for(lambda: len(read(bootstrap, Topic.DATA_VALIDATED)) >= 100, "100 records stored")
    yield running


def request(request_id: str, model: str, min_records: int = 1) -> tuple[str, TrainingRequested]:
    return model, TrainingRequested(request_id=request_id, model=model,
                                    reason=TrainingReason.MANUAL,
                                    window=DataWindow(last=100, min_records=min_records),
                                    requested_by="flooder")


def versions(platform: Platform, model: str) -> list[dict[str, object]]:
    with httpx.Client(timeout=10) as client:
        return list(client.get(f"{platform.url('registry')}/v1/models/{model}/versions").json())


def test_a_burst_beyond_the_budget_is_refused_and_alerted(platform: Platform) -> None:
    bootstrap = platform.bootstrap or ""
    publish(bootstrap, Topic.TRAINING_REQUESTS, [request(f"flood-{i}", "flood")
                                                 for i in range(5)])
    refused = {f"flood-{i}" for i in (2, 3, 4)}

    def alerted() -> list[AlertRaised]:
        found = [a for a in events(bootstrap, Topic.ALERTS, AlertRaised)
                 if a.kind == "training_refused" and a.evidence.get("request_id") in refused]
        return found if len(found) == len(refused) else []

    alerts = wait_for(alerted, "an alert per refused request", timeout=60)
    assert {a.model for a in alerts} == {"flood"}
    for request_id in sorted(refused):
        [letter] = wait_for(lambda rid=request_id: letters(bootstrap, f'"{rid}"'),  # type: ignore[misc]
                            f"the dead letter of {request_id}", timeout=60)
        assert letter.rejected_by == "training"
        assert "retrain budget used: 2 of 2 per hour" in letter.reason
    trained = wait_for(lambda: versions(platform, "flood") if len(versions(platform, "flood")) >= 2
                       else [], "the two accepted requests trained", timeout=90)
    assert sorted(v["request_id"] for v in trained) == ["flood-0", "flood-1"]


def test_a_window_that_never_fills_does_not_block_the_next_request(platform: Platform) -> None:
    publish(platform.bootstrap or "", Topic.TRAINING_REQUESTS, [
        request("stall-never", "stall", min_records=10**9),
        request("stall-ready", "stall", min_records=50)])
    # Training waits up to DRIFTLOOP_TRAINING_WINDOW_WAIT_SECONDS (180 s) for the first one;
    # the second must not wait behind it.
    trained = wait_for(lambda: versions(platform, "stall"), "the ready request trained",
                       timeout=60)
    assert [v["request_id"] for v in trained] == ["stall-ready"]
    parked = [p.name for p in (platform.data_dir / "training" / "queue").glob("*.json")]
    assert [name.startswith("stall-never-") for name in parked] == [True]  # durably parked
