"""Prediction: check the features against the dataset contract, predict, emit events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from contracts.events import PredictionMade
from contracts.http import PredictionItem
from services.serving.models import LoadedModel, ModelManager
from shared.errors import InvalidFeatures
from shared.project import Project
from shared.records import check_features, describe

Emit = Callable[[PredictionMade], None]


class Predictor:
    """Answers predictions with the current champion and hands each to `emit`."""

    def __init__(self, project: Project, models: ModelManager, emit: Emit) -> None:
        self.project = project
        self.models = models
        self.emit = emit

    def predict(self, model: str, instances: Sequence[dict[str, Any]],
                paths: Sequence[str]) -> tuple[LoadedModel, list[PredictionItem]]:
        """One version answers the whole call; a bad instance fails the call with its path."""
        spec = self.project.model(model)
        dataset = self.project.datasets[spec.dataset]
        problems: list[tuple[str, str]] = []
        clean = [check_features(x, dataset, problems, path) for x, path in zip(instances, paths,
                                                                                strict=True)]
        if problems:
            raise InvalidFeatures(detail=describe(problems), errors=problems)
        served = self.models.get(model)
        classifier = spec.task == "classification"
        items = []
        for features in clean:
            started = time.perf_counter()
            probabilities: dict[str, float] | None = None
            if classifier:
                proba = served.estimator.predict_proba_one(features)
                prediction = max(proba, key=proba.get) if proba else None
                probabilities = {str(k): float(v) for k, v in proba.items()}
            else:
                prediction = served.estimator.predict_one(features)
            elapsed = time.perf_counter() - started
            prediction_id = uuid.uuid4().hex
            self.emit(PredictionMade(
                prediction_id=prediction_id, model=model, version=served.version,
                features=features, prediction=prediction, probabilities=probabilities,
                latency_seconds=elapsed))
            items.append(PredictionItem(prediction=prediction, probabilities=probabilities,
                                        prediction_id=prediction_id))
        return served, items
