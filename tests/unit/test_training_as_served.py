"""A model that learns in serving is gated against the champion as serving has it (its
artifact plus what was logged after its data, the holdout's own records excepted), not the
bare artifact: a post-drift challenger must beat what actually serves."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from contracts.events import DataWindow, ModelTrained, TrainingReason, TrainingRequested
from contracts.http import ModelVersionView
from services.training.handlers import Trainer
from shared.artifacts import ArtifactStore
from shared.datasets import DatasetStore
from shared.project import Project
from tests.unit.factories import T0, TRAINING_KEY, demo_project, validated_rows

MODEL = "loans-tree"


def project(learn: bool) -> Project:
    raw = demo_project().model_dump(mode="json")
    raw["models"][MODEL]["serving"] = {"learn": learn}
    # an estimator that adapts when the concept flips, as one learning in serving would be
    raw["models"][MODEL]["pipeline"] = [{"estimator": "tree.HoeffdingAdaptiveTreeClassifier",
                                         "params": {"grace_period": 50}}]
    return Project.model_validate(raw)


def request(request_id: str, **window: object) -> TrainingRequested:
    return TrainingRequested(request_id=request_id, model=MODEL, reason=TrainingReason.MANUAL,
                             window=DataWindow.model_validate(window), requested_by="test")


def as_champion(event: ModelTrained) -> ModelVersionView:
    return ModelVersionView(model=event.model, version=1, run_id=event.run_id,
                            stage="champion", metric=event.metric, metrics=event.metrics,
                            artifact=event.artifact, lineage=event.lineage,
                            reference_profile=event.reference_profile, created_at=T0)


def baseline_after_a_flip(tmp_path: Path, learn: bool) -> float:
    """v1 on 400 records; then 600 with every label flipped; the baseline accuracy of a
    challenger trained on the newest 300."""
    datasets = DatasetStore(tmp_path / "datasets")
    rows = validated_rows(1000, seed=42)
    datasets.append("loans", rows[:400], T0)
    trainer = Trainer(project(learn), datasets,
                      ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY),
                      tmp_path / "state", TRAINING_KEY)
    champion = as_champion(trainer.train(request("v1"), None))
    flipped = [row.model_copy(update={"label": 1 - row.label}) for row in rows[400:]]
    for start in range(0, 600, 100):
        datasets.append("loans", flipped[start:start + 100], T0 + timedelta(minutes=1))

    run = trainer.train(request("challenger", last=300), champion)

    assert run.baseline_version == 1 and run.baseline_metrics is not None
    return run.baseline_metrics["accuracy"]


@pytest.mark.parametrize("learn", [True, False])
def test_the_champion_is_scored_as_it_serves(tmp_path: Path, learn: bool,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="services.training.handlers"):
        accuracy = baseline_after_a_flip(tmp_path, learn)

    if learn:  # it learned the 600 flipped records but the challenger's 60 held out
        assert accuracy > 0.6, accuracy
        assert "v1 scored as served: learned 540 records" in caplog.text
    else:  # the bare artifact still answers the old concept
        assert accuracy < 0.4, accuracy
        assert "scored as served" not in caplog.text
