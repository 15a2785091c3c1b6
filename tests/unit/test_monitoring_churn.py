"""Frequent decisions and versions: progressive challengers (several decisions for one
request id) and online learners (a new version every few hundred records)."""

from __future__ import annotations

import random

from contracts.events import BinnedDistribution, LifecycleAction
from services.monitoring.handlers import Monitor
from tests.unit.factories import demo_project, prediction
from tests.unit.test_monitoring_drift import FEATURES, HIGH, LOW
from tests.unit.test_monitoring_drift import reference as reference  # noqa: F401  (fixture)
from tests.unit.test_monitoring_logic import MODEL, Clock, lifecycle, requests
from tests.unit.test_monitoring_resolution import Rated


def test_later_decisions_about_one_request_are_harmless() -> None:
    """The rungs of one progressive retrain all carry its request id: the first decision
    releases the request in flight, later ones release nothing else."""
    clock = Clock()
    monitor = Monitor(demo_project(), clock=clock)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    stream = Rated(monitor)
    stream.feed(400, 1, 0.1)
    [first] = requests(stream.feed(800, 1, 0.6))
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.REJECTED, 1, request_id=first.request_id))
    clock.now += 60
    [second] = requests(stream.feed(300, 1, 0.6))
    watch = monitor.watches[MODEL]
    monitor.on_lifecycle(lifecycle(3, LifecycleAction.REJECTED, 1, request_id=first.request_id))
    assert watch.retrain_in_flight == second.request_id  # a later rung of the first
    incident = watch.incident()
    assert incident is not None and incident.previous == {"request_id": first.request_id,
                                                          "outcome": "rejected"}
    monitor.on_lifecycle(lifecycle(4, LifecycleAction.PROMOTED, 4, request_id=first.request_id))
    assert watch.concept.version == 4  # a promotion is a promotion, whoever asked
    assert watch.retrain_in_flight == second.request_id


def test_snapshots_with_the_same_or_no_profile_keep_the_data_drift_windows(
        reference: dict[str, BinnedDistribution]) -> None:  # noqa: F811
    """A snapshot every few hundred predictions must not restart the data-drift windows each
    time (the long one would never fill): an unchanged profile, or none, keeps them."""
    monitor = Monitor(demo_project(), clock=Clock())
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, reference=reference))
    rng = random.Random(8)
    data = monitor.watches[MODEL].data

    def long_window_full() -> bool:
        return all(long.full for _, long in data.windows.values())

    for i in range(600):
        monitor.on_prediction(prediction(i, 1, features={
            name: rng.uniform(LOW, HIGH) for name in FEATURES}))
    assert long_window_full()
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.PROMOTED, 2, reference=reference))
    assert long_window_full()
    monitor.on_lifecycle(lifecycle(3, LifecycleAction.PROMOTED, 3, reference={}))
    assert long_window_full() and set(data.windows) == set(FEATURES)
    other = {name: BinnedDistribution(edges=[45.0], fractions=[0.5, 0.5]) for name in FEATURES}
    monitor.on_lifecycle(lifecycle(4, LifecycleAction.PROMOTED, 4, reference=other))
    assert not any(long.bins for _, long in data.windows.values())  # a new yardstick
