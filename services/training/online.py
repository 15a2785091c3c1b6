"""Online learners: one per model that declares `[models.X.online]`, learning every validated
record of its dataset in ingestion order, test-then-train, and offering signed snapshots.

Order. data.validated is keyed by record id, spread over partitions, so no consumer of it
sees the ingestion order; the dataset store's log does (ingestion's per-dataset sequence),
and it holds only records that are durable. The learner therefore tails the store, one
immutable segment at a time, and is the only writer of its model's state (`online_runner.py`
takes a lock so a second training process on the same data cannot learn the same model).

Evaluation. Each record is predicted before it is learned; the newest `prequential_window`
outcomes are kept. A snapshot's metrics are those outcomes on the records the champion never
learned (after the end of the champion's training snapshot), and its baseline is the champion
scored on exactly those records. The learner follows the registry's champion (`follow`) and
predicts each record with it as it arrives; the champion does not learn, so that equals
scoring it when the snapshot is taken, costs one prediction a record rather than a window's
at every snapshot, and tells at any time whether the learner beats the champion. When it
does, significantly and by the policy's margin, a snapshot is due at once
(`early_snapshot_records`): after a drift the adapted learner reaches serving within tens of
records instead of a whole cadence. At the cadence, a snapshot that would not beat the
champion by the registry's own comparison is not offered (`offer_when_better`): an ARF(10)
snapshot is megabytes to pickle, store, register and load, and most were rejected. A new
champion's predictions over the window are computed once, when it is first followed.

Restart. Each snapshot stores the learner's state (its model, as the signed artifact, and the
window's predictions); a restarted learner loads the last one, verified, and replays the
records logged after it. A crash loses no learning, only time: the replay of at most one
snapshot interval.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from contracts.events import (
    ArtifactRef,
    DataWindow,
    Holdout,
    Lineage,
    ModelTrained,
    RecordValidated,
)
from contracts.http import ModelVersionView
from services.training.evaluation import numeric_features, profile, score_predictions
from services.training.handlers import code_version
from services.training.intake import safe_name
from shared.artifacts import ArtifactStore
from shared.datasets import DatasetStore
from shared.errors import ArtifactIntegrityError, ArtifactNotFound, SnapshotNotFound
from shared.files import atomic_write
from shared.pipelines import build_pipeline
from shared.project import Project
from shared.promotion import compare
from shared.signing import Signer

logger = logging.getLogger(__name__)

MODE = {"mode": "online", "evaluation": "prequential"}
"""Marks a run as an online snapshot scored test-then-train (in its lineage's
hyperparameters)."""

EARLY_Z = 3.0
"""How significant the learner's lead over the champion must be for an early snapshot: a
paired t statistic of the two's per-record losses (~0.1% one-sided false triggers per look;
the registry's gate still decides)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One record as the learner met it: its place in the dataset log, and what the learner
    predicted before learning it."""

    position: int
    record: RecordValidated
    predicted: Any


class LearnerState(BaseModel):
    """What a restart needs, written at each snapshot before it is published."""

    model_config = ConfigDict(frozen=True)

    snapshots: int
    learned: int
    segments: int
    artifact: ArtifactRef
    window: list[tuple[int, Any]]
    """(position, prediction) of the prequential window at the snapshot."""
    run: ModelTrained
    published: bool = False


class OnlineLearner:
    """The learner of one model; synchronous (the runner calls it from a thread)."""

    def __init__(self, name: str, project: Project, datasets: DatasetStore,
                 artifacts: ArtifactStore, signer: Signer, state_dir: Path,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.spec = project.model(name)
        if self.spec.online is None:
            raise ValueError(f"model {name!r} does not declare [models.{name}.online]")
        self.online = self.spec.online
        self.dataset = self.spec.dataset
        self.numeric = numeric_features(project.datasets[self.dataset])
        self.datasets = datasets
        self.artifacts = artifacts
        self.signer = signer
        self.state_path = state_dir / f"{safe_name(name)}.json"
        self.clock = clock
        self.steps = [step.model_dump() for step in self.spec.pipeline]
        self.model: Any = build_pipeline(self.steps, seed=self.spec.training.seed)
        self.window: deque[Outcome] = deque(maxlen=self.online.prequential_window)
        self.learned = 0
        self.segments = 0
        self.snapshots = 0
        self.snapshot_at = 0
        """Records learned when the last snapshot was taken."""
        self.snapshot_time = clock()
        self._postponed_at = -1
        self._champion: tuple[int, Any, int] | None = None
        """(version, model, first position it never learned) of the champion followed."""
        self._baseline: dict[int, Any] = {}
        """The followed champion's prediction of each window record it never learned."""

    # -- learning ---------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Learn every segment logged since the last call, in log order; the count learned."""
        return self._learn_segments([(s.digest, s.count)
                                     for s in self.datasets.segments(self.dataset)])

    def news(self) -> bool:
        """Whether the dataset log holds segments not learned yet."""
        return len(self.datasets.segments(self.dataset)) > self.segments

    def _learn_segments(self, log: list[tuple[str, int]]) -> int:
        """Learn the segments of `log` (digest, count; the whole log so far) not yet learned."""
        before = self.learned
        for digest, count in log[self.segments:]:
            for record in self._read(digest, count):
                self._learn(record)
            self.segments += 1
        return self.learned - before

    def _read(self, digest: str, count: int) -> list[RecordValidated]:
        return self.datasets.read_segment(self.dataset, digest)[:count]

    def _learn(self, record: RecordValidated) -> None:
        """Test, then train; and the followed champion's prediction, to compare."""
        try:
            predicted = self.model.predict_one(record.features)
            self.model.learn_one(record.features, record.label)
        except Exception:  # a record the estimator cannot take: skipped the same way on replay
            logger.exception("online learner %s could not learn record %s; skipped",
                             self.name, record.record_id)
            predicted = None
        if len(self.window) == self.window.maxlen:
            self._baseline.pop(self.window[0].position, None)
        self.window.append(Outcome(self.learned, record, predicted))
        if self._champion is not None and self.learned >= self._champion[2]:
            self._baseline[self.learned] = _predict(self._champion[1], record)
        self.learned += 1

    # -- the champion -----------------------------------------------------------------------

    def follow(self, champion: ModelVersionView | None) -> None:
        """Compare from now on with `champion` (the registry's; None: there is none). A new
        one is loaded (verified before unpickling) and predicts the window's records it never
        learned, once."""
        if champion is None:
            self._champion, self._baseline = None, {}
            return
        if self._champion is not None and self._champion[0] == champion.version:
            return
        model = self.artifacts.load_model(champion.artifact)
        self._champion = (champion.version, model, self._end_of(champion))
        self._baseline = {o.position: _predict(model, o.record) for o in self.window
                          if o.position >= self._champion[2]}

    def _compared(self) -> list[Outcome]:
        """Window outcomes on records the followed champion never learned."""
        unseen_from = 0 if self._champion is None else self._champion[2]
        return [o for o in self.window if o.position >= unseen_from]

    def _baseline_metrics(self, compared: list[Outcome]) -> dict[str, float]:
        return score_predictions([(o.record.label, self._baseline.get(o.position))
                                  for o in compared], self.spec.task)

    def beats_champion(self) -> bool:
        """Whether the learner is better than the followed champion on the records it never
        learned: at least `early_snapshot_records` of them, by the policy's margin (the
        registry's own comparison) and significantly (paired t of the losses >= EARLY_Z)."""
        least = self.online.early_snapshot_records
        return least > 0 and self._champion is not None and self._better(least, True)

    def _better(self, least: int, significantly: bool) -> bool:
        """The registry's comparison of learner and champion on at least `least` compared
        records; with `significantly`, also the paired test of their losses."""
        compared = self._compared()
        if len(compared) < least:
            return False
        if significantly:
            gains = [_loss(self._baseline.get(o.position), o.record.label, self.spec.task)
                     - _loss(o.predicted, o.record.label, self.spec.task) for o in compared]
            finite = [g for g in gains if not math.isnan(g)]
            if len(finite) < least or not _significant(finite):
                return False
        verdict = compare(self.spec.policy,
                          score_predictions([(o.record.label, o.predicted) for o in compared],
                                            self.spec.task),
                          self._baseline_metrics(compared), "champion")
        return verdict.better

    def _worth_offering(self) -> bool:
        """A snapshot at the cadence is offered when there is no champion, when every one is
        to be offered (`offer_when_better = false`), or when it beats the champion."""
        return (self._champion is None or not self.online.offer_when_better
                or self._better(self.min_compared, False))

    # -- snapshots --------------------------------------------------------------------------

    def due(self) -> bool:
        """Warm, with new records since the last snapshot, and enough of them (or time)."""
        fresh = self.learned - self.snapshot_at
        if self.learned < self.online.warm_up_records or fresh <= 0:
            return False
        if self.learned == self._postponed_at:
            return False  # too little to compare with the champion; wait for more records
        every = self.online.snapshot_every_seconds
        if fresh >= self.online.snapshot_every_records or (
                every > 0 and self.clock() - self.snapshot_time >= every):
            return self._worth_offering() or self.beats_champion()
        return fresh >= self.online.early_snapshot_records > 0 and self.beats_champion()

    @property
    def min_compared(self) -> int:
        """Records a snapshot and the champion must both be scored on."""
        return min(self.online.prequential_window, self.online.snapshot_every_records)

    def snapshot(self, champion: ModelVersionView | None) -> ModelTrained | None:
        """A signed candidate of the learner as it is now, or None while too few records the
        champion never learned are in the window to compare the two on."""
        started = time.perf_counter()
        self.follow(champion)
        if champion is not None and not self.beats_champion():
            have = len(self._compared())
            if have < self.min_compared:
                logger.info("snapshot of %s waits: %d records the champion v%d never learned "
                            "(needs %d)", self.name, have, champion.version, self.min_compared)
                self._postponed_at = self.learned
                return None
            if not self._worth_offering():
                logger.debug("snapshot of %s not offered: no better than champion v%d on %d "
                             "records", self.name, champion.version, have)
                self._postponed_at = self.learned
                return None
        frozen = self.datasets.snapshot(self.dataset)  # exactly what will have been learned
        self._learn_segments([(digest, end) for digest, _, end in frozen.slices])
        compared = self._compared()
        baseline = None if champion is None else self._baseline_metrics(compared)
        self.snapshots += 1
        metrics = score_predictions([(o.record.label, o.predicted) for o in compared],
                                    self.spec.task)
        artifact = self.artifacts.save_model(self.model)
        run = self.signer.sign_run(ModelTrained(
            run_id=f"run-{uuid.uuid4().hex[:12]}", model=self.name,
            request_id=f"online-{self.name[:150]}-{self.snapshots}", metric=self.spec.policy.metric,
            metrics=metrics,
            holdout=Holdout(snapshot_id=frozen.snapshot_id,
                            start=compared[0].position if compared else self.learned,
                            size=len(compared)),
            baseline_version=champion.version if champion else None, baseline_metrics=baseline,
            lineage=Lineage(dataset=self.dataset, snapshot_id=frozen.snapshot_id,
                            records=frozen.records, window=DataWindow(), pipeline=self.steps,
                            hyperparameters={**MODE, "snapshot": self.snapshots,
                                             "prequential_window": self.online.prequential_window,
                                             "compared_records": len(compared)},
                            seed=self.spec.training.seed, code_version=code_version()),
            artifact=artifact,
            reference_profile=profile([o.record for o in self.window], self.numeric),
            duration_seconds=time.perf_counter() - started))
        self._save(LearnerState(snapshots=self.snapshots, learned=self.learned,
                                segments=self.segments, artifact=artifact,
                                window=[(o.position, _plain(o.predicted)) for o in self.window],
                                run=run))
        self.snapshot_at, self.snapshot_time = self.learned, self.clock()
        logger.info("online snapshot %d of %s after %d records: %s %.4f (champion %s)",
                    self.snapshots, self.name, self.learned, self.spec.policy.metric,
                    metrics.get(self.spec.policy.metric, float("nan")),
                    "none" if baseline is None else
                    f"v{run.baseline_version} {baseline.get(self.spec.policy.metric, 0):.4f}")
        return run

    def published(self, run: ModelTrained) -> None:
        """Remember that the snapshot's run reached the broker."""
        state = self._load()
        if state is not None and state.run.run_id == run.run_id:
            self._save(state.model_copy(update={"published": True}))

    def _end_of(self, champion: ModelVersionView) -> int:
        """The first log position `champion` never learned: after the last record of its
        training snapshot."""
        lineage = champion.lineage
        try:
            snapshot = self.datasets.open_snapshot(lineage.dataset, lineage.snapshot_id)
        except SnapshotNotFound:
            logger.warning("training snapshot of %s v%d not found; comparing on records "
                           "learned from now on", self.name, champion.version)
            return self.learned
        end = self.datasets.end_of(snapshot)
        return self.learned if end is None else end

    # -- restart ----------------------------------------------------------------------------

    def restore(self) -> ModelTrained | None:
        """Resume from the last snapshot, if any (the artifact verified before it is
        unpickled); then `catch_up` replays what came after. Returns the last run when it may
        not have reached the broker (publish it again: the registry keys runs by id)."""
        state = self._load()
        if state is None:
            return None
        try:
            model = self.artifacts.load_model(state.artifact)
        except (ArtifactIntegrityError, ArtifactNotFound) as exc:  # relearn the whole log
            logger.error("last snapshot of %s unusable (%s); relearning the dataset from its "
                         "start", self.name, exc)
            return None
        self.model, self.learned, self.segments = model, state.learned, state.segments
        self.snapshots, self.snapshot_at = state.snapshots, state.learned
        predicted = dict(state.window)
        first = min(predicted, default=self.learned)
        segments = self.datasets.segments(self.dataset)[:self.segments]
        position = sum(segment.count for segment in segments)
        for segment in reversed(segments):  # only the newest segments hold the window
            if position <= first:
                break
            position -= segment.count
            outcomes = [Outcome(position + i, record, predicted.get(position + i))
                        for i, record in enumerate(self._read(segment.digest, segment.count))]
            self.window.extendleft(o for o in reversed(outcomes) if o.position >= first)
        logger.info("online learner %s resumed at snapshot %d (%d records)", self.name,
                    self.snapshots, self.learned)
        return None if state.published else state.run

    def _load(self) -> LearnerState | None:
        if not self.state_path.exists():
            return None
        return LearnerState.model_validate_json(self.state_path.read_bytes())

    def _save(self, state: LearnerState) -> None:
        atomic_write(self.state_path, state.model_dump_json().encode())


def _predict(model: Any, record: RecordValidated) -> Any:
    try:
        return model.predict_one(record.features)
    except Exception:  # the champion cannot take this record: no opinion, as for the learner
        return None


def _loss(predicted: Any, label: Any, task: str) -> float:
    """0/1 loss of a classification, absolute error of a regression; NaN without opinion."""
    if predicted is None:
        return math.nan
    if task == "classification":
        return 0.0 if predicted == label else 1.0
    return abs(float(predicted) - float(label))


def _significant(gains: list[float]) -> bool:
    """A paired t test that the mean gain is above zero (all equal and positive: yes)."""
    n = len(gains)
    mean = sum(gains) / n
    if mean <= 0:
        return False
    variance = sum((g - mean) ** 2 for g in gains) / max(n - 1, 1)
    return variance == 0 or mean / math.sqrt(variance / n) >= EARLY_Z


def _plain(value: Any) -> Any:
    """A prediction as JSON can hold it (a numpy scalar becomes its Python value)."""
    return value.item() if hasattr(value, "item") else value
