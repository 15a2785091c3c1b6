"""The yardsticks, run in-process on exactly the samples driftloop served.

- River's adaptive random forest (ARFClassifier / ARFRegressor, 10 trees), test-then-train
  on every sample from the first (River's prequential evaluation; labels arrive at once).
- The same forest with each label arriving `label_delay` samples late, as the harness sends
  them to driftloop: what separates the cost of the label's own delay from the platform's.
- A static model: the run's own pipeline (shared/pipelines.py, same seed and passes), trained
  once on the first `initial` records and never updated: what serving would answer with no
  loop at all.

Both are scored on the served range only (samples `initial` onwards), like driftloop.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from river import forest

from bench.loop.streams import Stream
from shared.pipelines import build_pipeline
from shared.project import ModelSpec


def adaptive_forest(stream: Stream, initial: int, seed: int, label_delay: int = 0) -> list[Any]:
    """ARF(10) predictions for samples `initial`.. (each before it learns the sample; with
    `label_delay`, served samples are learned that many samples after they were predicted)."""
    model: Any = (forest.ARFClassifier(n_models=10, seed=seed) if stream.task == "classification"
                  else forest.ARFRegressor(n_models=10, seed=seed))
    predicted: list[Any] = []
    waiting: deque[tuple[Any, Any]] = deque()
    for index, (x, y) in enumerate(stream.samples):
        if index < initial:
            model.learn_one(x, y)
            continue
        predicted.append(model.predict_one(x))
        waiting.append((x, y))
        if len(waiting) > label_delay:
            model.learn_one(*waiting.popleft())
    return predicted


def static(stream: Stream, initial: int, spec: ModelSpec) -> list[Any]:
    """Predictions for samples `initial`.. of the pipeline trained once on the first ones."""
    model = build_pipeline([step.model_dump() for step in spec.pipeline], seed=spec.training.seed)
    for _ in range(spec.training.passes):
        for x, y in stream.samples[:initial]:
            model.learn_one(x, y)
    return [model.predict_one(x) for x, _ in stream.samples[initial:]]


def both(stream: Stream, initial: int, seed: int, spec: ModelSpec,
         label_delay: int = 0) -> dict[str, Any]:
    """ARF (labels at once, and `label_delay` late) and static predictions, and the seconds
    they took (run in a worker process)."""
    started = time.perf_counter()
    return {"arf": adaptive_forest(stream, initial, seed),
            "arf_delayed": adaptive_forest(stream, initial, seed, label_delay),
            "static": static(stream, initial, spec), "seconds": time.perf_counter() - started}
