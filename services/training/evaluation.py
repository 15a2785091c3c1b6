"""Scoring a model on a holdout, and profiling training data for drift reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from river import metrics

from contracts.base import FeatureValue
from contracts.events import BinnedDistribution, RecordValidated
from shared.project import DatasetSpec, ValueType

CLASSIFICATION_METRICS = {"accuracy": metrics.Accuracy, "f1": metrics.MacroF1}
REGRESSION_METRICS = {"mae": metrics.MAE, "rmse": metrics.RMSE, "r2": metrics.R2}


def score(model: Any, holdout: Sequence[RecordValidated], task: str) -> dict[str, float]:
    """Metrics of `model` on `holdout`, predicting each record before seeing its label."""
    return score_predictions([(r.label, model.predict_one(r.features)) for r in holdout], task)


def score_predictions(outcomes: Sequence[tuple[FeatureValue, Any]], task: str) -> dict[str, float]:
    """Metrics of (label, prediction) pairs made before each label was seen: a holdout's, or
    an online learner's test-then-train outcomes. A None prediction (no opinion yet) counts
    in `holdout_size` only."""
    table: dict[str, Callable[[], Any]] = dict(
        CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS)
    trackers = {name: factory() for name, factory in table.items()}
    for label, predicted in outcomes:
        if predicted is None:
            continue
        for tracker in trackers.values():
            tracker.update(label, predicted)
    values = {name: float(tracker.get()) for name, tracker in trackers.items()}
    values["holdout_size"] = float(len(outcomes))
    return {k: (0.0 if math.isnan(v) else v) for k, v in values.items()}


def numeric_features(spec: DatasetSpec) -> list[str]:
    """The dataset's numeric features: those a reference profile bins."""
    return [name for name, feature in spec.features.items()
            if feature.type in (ValueType.FLOAT, ValueType.INT)]


def profile(records: Sequence[RecordValidated], features: Sequence[str],
            bins: int = 10) -> dict[str, BinnedDistribution]:
    """Decile edges and fractions of each numeric feature: the data-drift reference."""
    reference: dict[str, BinnedDistribution] = {}
    for name in features:
        values = np.array([r.features[name] for r in records
                           if isinstance(r.features.get(name), int | float)
                           and not isinstance(r.features.get(name), bool)], dtype=float)
        if len(values) < bins:
            continue
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, values, side="right"),
                             minlength=len(edges) + 1)
        reference[name] = BinnedDistribution(edges=edges.tolist(),
                                             fractions=(counts / len(values)).tolist())
    return reference
