"""Prediction: check the features against the dataset contract, predict, encode the events.

The events are encoded here, once, as the JSON of `PredictionMade` (orjson on a dict:
~1.5 µs against ~10 µs for building and dumping the pydantic model), so what waits for the
broker is bytes, not objects the garbage collector must walk.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from services.serving.models import LoadedModel, ModelManager
from shared.errors import InvalidFeatures
from shared.partitioning import id_on_partition, key_index
from shared.project import Project
from shared.records import check_features, describe

Event = tuple[str, bytes]
"""(prediction_id, JSON of contracts.events.PredictionMade)."""
Deliver = Callable[[list[Event]], Awaitable[None]]
"""Hands a request's events to the publisher; returns when the delivery mode allows the
answer (queued, or acknowledged by the broker); raises DependencyUnavailable (503) if not."""


_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """A JSON value for a model output (numpy scalars become Python ones)."""
    if isinstance(value, _PLAIN):
        return value
    return value.item() if hasattr(value, "item") else str(value)


@dataclass(frozen=True, slots=True)
class Answer:
    served: LoadedModel
    items: list[dict[str, Any]]
    """`PredictionItem`-shaped dicts, in order."""
    events: list[Event]


class Predictor:
    """Answers predictions with the current champion; `deliver` publishes their events."""

    def __init__(self, project: Project, models: ModelManager, deliver: Deliver,
                 max_instances: int = 1_000, inline_body_bytes: int = 16_384,
                 partitions: int = 3) -> None:
        self.project = project
        self.partitions = partitions
        """Partitions of the predictions topic: each prediction id lands on its model's."""
        self.models = models
        self.deliver = deliver
        self.max_instances = max_instances
        self.inline_body_bytes = inline_body_bytes
        """Larger request bodies are parsed and predicted in a worker thread."""

    def predict(self, model: str, instances: Sequence[dict[str, Any]],
                paths: Sequence[str]) -> Answer:
        """One version answers the whole call; a bad instance fails the call with its path.

        Pure (reads the model, changes nothing), so it may run in a worker thread."""
        if len(instances) > self.max_instances:
            raise InvalidFeatures(
                detail=f"{len(instances)} instances in one call; at most {self.max_instances} "
                       "(DRIFTLOOP_SERVING_MAX_BATCH_INSTANCES): split the batch",
                errors=[("instances", f"at most {self.max_instances} per call")])
        spec = self.project.model(model)
        dataset = self.project.datasets[spec.dataset]
        problems: list[tuple[str, str]] = []
        clean = [check_features(x, dataset, problems, path) for x, path in zip(instances, paths,
                                                                                strict=True)]
        if problems:
            raise InvalidFeatures(detail=describe(problems), errors=problems)
        served = self.models.get(model)
        if served.learned is None:
            return self._answer(model, served, clean, spec.task == "classification")
        with served.learned.guard.reading():  # it learns on the loop: not while we read
            return self._answer(model, served, clean, spec.task == "classification")

    def _answer(self, model: str, served: LoadedModel, clean: list[dict[str, Any]],
                classifier: bool) -> Answer:
        estimator = served.estimator
        learned = {} if served.learned is None else {"learned_through":
                                                     served.learned.through}
        home = key_index(model, self.partitions)
        at = datetime.now(UTC)
        items: list[dict[str, Any]] = []
        events: list[Event] = []
        for features in clean:
            started = time.perf_counter()
            probabilities: dict[str, float] | None = None
            if classifier:
                proba = estimator.predict_proba_one(features)
                prediction = _plain(max(proba, key=proba.get)) if proba else None
                probabilities = {str(k): float(v) for k, v in proba.items()}
            else:
                prediction = _plain(estimator.predict_one(features))
            elapsed = time.perf_counter() - started
            prediction_id = id_on_partition(uuid.uuid4().hex, home, self.partitions)
            events.append((prediction_id, orjson.dumps({
                "prediction_id": prediction_id, "model": model, "version": served.version,
                "features": features, "prediction": prediction, "probabilities": probabilities,
                "latency_seconds": elapsed, "at": at, **learned})))
            items.append({"prediction": prediction, "probabilities": probabilities,
                          "prediction_id": prediction_id})
        return Answer(served, items, events)
