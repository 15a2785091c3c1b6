"""Scoring a model on a holdout, and profiling training data for drift reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from river import metrics

from contracts.events import BinnedDistribution, RecordValidated

CLASSIFICATION_METRICS = {"accuracy": metrics.Accuracy, "f1": metrics.MacroF1}
REGRESSION_METRICS = {"mae": metrics.MAE, "rmse": metrics.RMSE, "r2": metrics.R2}


def score(model: Any, holdout: Sequence[RecordValidated], task: str) -> dict[str, float]:
    """Metrics of `model` on `holdout`, predicting each record before seeing its label."""
    table: dict[str, Callable[[], Any]] = dict(
        CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS)
    trackers = {name: factory() for name, factory in table.items()}
    for record in holdout:
        predicted = model.predict_one(record.features)
        if predicted is None:
            continue
        for tracker in trackers.values():
            tracker.update(record.label, predicted)
    values = {name: float(tracker.get()) for name, tracker in trackers.items()}
    values["holdout_size"] = float(len(holdout))
    return {k: (0.0 if math.isnan(v) else v) for k, v in values.items()}


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
