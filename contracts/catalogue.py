"""Which contract travels on which topic, and its CloudEvents type."""

from __future__ import annotations

from typing import NamedTuple

from contracts.base import Contract
from contracts.events import (
    AlertRaised,
    Feedback,
    LabeledRecord,
    ModelLifecycleChanged,
    ModelTrained,
    PredictionMade,
    RecordRejected,
    RecordValidated,
    TrainingRequested,
)
from contracts.topics import Topic

MAJOR_VERSION = 1
"""Major version of every event contract; a breaking change bumps it (ce_type ...v2)."""


class TopicContract(NamedTuple):
    """A topic's event model and CloudEvents type."""

    model: type[Contract]
    ce_type: str


def _ce_type(model: type[Contract]) -> str:
    return f"io.driftloop.{model.__name__}.v{MAJOR_VERSION}"


CATALOGUE: dict[Topic, TopicContract] = {
    topic: TopicContract(model, _ce_type(model))
    for topic, model in (
        (Topic.DATA_LABELED, LabeledRecord),
        (Topic.DATA_VALIDATED, RecordValidated),
        (Topic.DATA_REJECTED, RecordRejected),
        (Topic.TRAINING_REQUESTS, TrainingRequested),
        (Topic.MODELS_TRAINED, ModelTrained),
        (Topic.MODELS_LIFECYCLE, ModelLifecycleChanged),
        (Topic.PREDICTIONS, PredictionMade),
        (Topic.FEEDBACK, Feedback),
        (Topic.ALERTS, AlertRaised),
    )
}


def ce_type_of(model: type[Contract]) -> str:
    """The CloudEvents type for an event model."""
    return _ce_type(model)
