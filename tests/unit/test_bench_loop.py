"""The loop benchmark's own logic (bench/loop), without services: figures per segment, swap
latency from a synthetic trace, the streams' drift layout and the project file it writes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from river.datasets import synth

from bench.loop import metrics, project_file, streams


def test_segment_means_clip_to_the_served_range():
    result = metrics.Outcomes(first=100, values=[1.0] * 50 + [0.0] * 50)
    assert result.mean() == 0.5
    assert result.mean(0, 150) == 1.0  # samples before `first` were not served
    assert result.mean(150, 10_000) == 0.0
    assert result.mean(300, 400) is None


def test_outcomes_are_correctness_for_classifiers_and_absolute_error_for_regressors():
    truth = [9, 9, 1, 0, 1]
    assert metrics.outcomes("classification", truth, [1, 1, 0], first=2).values == [1, 0, 0]
    regression = metrics.outcomes("regression", [0.0, 2.0, 3.0], [2.5, 1.0], first=1)
    assert regression.values == [0.5, 2.0]


def test_after_drift_windows_stop_at_the_next_drift_and_the_end():
    assert metrics.after_drift([1000, 2500], end=3000, window=2000) == [(1000, 2500),
                                                                        (2500, 3000)]
    assert metrics.after_drift([], end=3000) == []  # a gradual stream has no drift points


def test_recovery_counts_samples_until_accuracy_is_back_near_the_pre_drift_level():
    # 90% before the drift, 0% for 300 samples after it, then 90% again.
    pattern = [1.0] * 9 + [0.0]
    values = pattern * 100 + [0.0] * 300 + pattern * 170
    result = metrics.Outcomes(first=0, values=values)
    back = metrics.recovery(result, drift=1000, stop=3000, window=500, step=50)
    assert back == 300
    never = metrics.Outcomes(first=0, values=pattern * 100 + [0.0] * 2000)
    assert metrics.recovery(never, drift=1000, stop=3000) is None


def test_swap_latency_from_a_synthetic_trace():
    # 10 answers per second; v1 until t=5.0, v2 from the answer at t=6.5 on; the alarm at t=4.0.
    times = [k / 10 for k in range(100)]
    versions = [1 if t < 6.5 else 2 for t in times]
    swap = metrics.swap_after(4.0, versions, times)
    assert swap is not None
    assert swap.version == 2
    assert swap.seconds == pytest.approx(2.5)
    assert swap.samples == 24  # answers at 4.1 .. 6.4 still came from v1


def test_swap_latency_ignores_answers_out_of_order_and_reports_a_missing_swap():
    times = [0.0, 0.2, 0.1, 0.4, 0.3]   # concurrent workers answer out of order
    versions = [1, 1, 1, 2, 1]
    swap = metrics.swap_after(0.15, versions, times)
    assert swap is not None and swap.samples == 2 and swap.seconds == pytest.approx(0.25)
    assert metrics.swap_after(0.5, versions, times) is None  # v2 already served: no newer one
    assert metrics.swap_after(0.05, [1, 1, 1, 1, 1], times) is None


def test_drift_to_new_version_counts_stale_samples_after_the_drift():
    versions = [1] * 30 + [2] * 10
    assert metrics.drift_to_swap(drift=120, versions=versions, first=100) == 10
    assert metrics.drift_to_swap(drift=135, versions=versions, first=100) is None


def test_rate_and_latency_come_from_the_client_times():
    sent = [0.0, 0.5, 1.0]
    answered = [0.01, 0.52, 2.0]
    assert metrics.achieved_rate(sent, answered) == pytest.approx(1.5)
    assert metrics.latency_ms(sent, answered)["p50"] == pytest.approx(20.0)


def test_drifts_sit_at_a_third_and_two_thirds_and_covariate_shift_keeps_the_concept():
    sine = streams.build("sine", 600, seed=3)
    assert sine.drifts == (200, 400) and len(sine.samples) == 600
    assert all(isinstance(k, str) for k in sine.samples[0][0])
    shifted = streams.build("covariate-agrawal1", 600, seed=3)
    plain = list(itertools.islice(synth.Agrawal(classification_function=1, seed=3), 600))
    assert shifted.drifts == (200,) and not shifted.concept_drift
    assert shifted.samples[199][0]["salary"] == plain[199][0]["salary"]
    assert shifted.samples[200][0]["salary"] == pytest.approx(1.5 * plain[200][0]["salary"])
    label = synth.Agrawal._classification_function_1
    for x, y in shifted.samples[200:]:
        assert y == label(**x)  # the same function labels the shifted record


@pytest.mark.parametrize("variant", project_file.VARIANTS)
@pytest.mark.parametrize("name", ["sea", "friedman"])
def test_the_project_file_it_writes_is_one_the_platform_accepts(tmp_path: Path, variant, name):
    stream = streams.build(name, 300, seed=1)
    project = project_file.write(tmp_path / "p.toml", variant, stream, initial=50)
    spec = project.model(project_file.MODEL)
    assert spec.task == stream.task
    assert spec.policy.initial_training_records == 50
    assert set(project.datasets[project_file.DATASET].features) == set(stream.features)
    if variant == "online":
        assert spec.online is not None and spec.policy.retrain_windows == [200, 500, 1000, 2000]


def test_outcomes_split_by_the_version_that_answered():
    result = metrics.Outcomes(first=10, values=[0.0, 0.0, 1.0, 1.0, 0.0])
    assert metrics.by_version(result, [1, 1, 2, 2, 2]) == {1: (2, 0.0), 2: (3, 2 / 3)}
