"""Training runs and the first-training trigger; no Kafka or HTTP types here."""

from __future__ import annotations

import logging
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from contracts.events import (
    DataWindow,
    Holdout,
    Lineage,
    ModelTrained,
    RecordValidated,
    TrainingReason,
    TrainingRequested,
)
from contracts.http import ModelVersionView
from services.training.evaluation import numeric_features, profile, score
from services.training.intake import safe_name
from shared.artifacts import ArtifactStore
from shared.datasets import DatasetStore, Snapshot, by_event_time
from shared.errors import InvalidInput, SnapshotNotFound
from shared.files import atomic_write
from shared.pipelines import build_pipeline
from shared.project import PolicySpec, Project
from shared.promotion import Verdict, compare
from shared.replay import learn_logged
from shared.signing import Signer

logger = logging.getLogger(__name__)


def code_version() -> str:
    try:
        return metadata.version("driftloop")
    except metadata.PackageNotFoundError:
        return "unknown"


class NotEnoughData(InvalidInput):
    template = "window of {model!r} holds {records} records; at least {needed} are needed"


class Trainer:
    """Turns training requests into scored, stored, signed candidate models.

    The champion used as the baseline is unpickled only after its artifact verified
    (training's own signature over the digest, and the bytes against the digest).
    """

    def __init__(self, project: Project, datasets: DatasetStore, artifacts: ArtifactStore,
                 state_dir: Path, signer: Signer, min_records: int = 20) -> None:
        self.project = project
        self.signer = signer
        self.datasets = datasets
        self.artifacts = artifacts
        self.runs_dir = state_dir / "runs"
        self.initial_dir = state_dir / "initial-requests"
        self.min_records = min_records

    def _run_path(self, request_id: str, rung: int | None) -> Path:
        if rung is None:
            return self.runs_dir / f"{_safe(request_id)}.json"
        # A folder per laddered request, named distinctly for distinct ids (never `.json`).
        return self.runs_dir / safe_name(request_id) / f"rung-{rung}.json"

    def completed(self, request_id: str, rung: int | None = None) -> ModelTrained | None:
        """The run already made for a request (or for one rung of its ladder), if any:
        requests and rungs run once, and a replay re-publishes what they made."""
        path = self._run_path(request_id, rung)
        return ModelTrained.model_validate_json(path.read_bytes()) if path.exists() else None

    def runs(self, request_id: str) -> list[ModelTrained]:
        """Every run made for a request: its one run, or its ladder's rungs in order."""
        single = self.completed(request_id)
        if single is not None:
            return [single]
        found: list[ModelTrained] = []
        while (run := self.completed(request_id, len(found))) is not None:
            found.append(run)
        return found

    def rungs(self, request: TrainingRequested) -> list[int]:
        """Window sizes of the progressive challengers for a drift request, smallest first;
        empty when it is trained once, as requested.

        Each size is at least `min_records` (below it nothing is trained) and at most the
        request's `window.last` cap: a rung that reaches the cap is the last one.
        """
        policy = self.project.model(request.model).policy
        if request.reason is not TrainingReason.DRIFT or not policy.retrain_windows:
            return []
        cap = request.window.last
        return sorted({min(max(size, self.min_records), cap or size)
                       for size in policy.retrain_windows})

    def window_records(self, request: TrainingRequested) -> int:
        """Records currently in the request's window."""
        dataset = self.project.model(request.model).dataset
        available = self.datasets.count_since(dataset, request.window.since)
        return min(available, request.window.last) if request.window.last else available

    def train(self, request: TrainingRequested, champion: ModelVersionView | None,
              rung: int | None = None) -> ModelTrained:
        """Snapshot the window, train, score candidate and champion on one holdout, store.

        With `rung`, the window is that rung's: the newest `rungs(request)[rung]` records
        since the request's change point.
        """
        started = time.perf_counter()
        spec = self.project.model(request.model)
        window = request.window
        hyperparameters: dict[str, Any] = {"passes": spec.training.passes,
                                           "holdout_fraction": spec.training.holdout_fraction}
        if rung is not None:
            sizes = self.rungs(request)
            window = DataWindow(since=request.window.since, last=sizes[rung],
                                min_records=sizes[rung])
            hyperparameters |= {"rung": rung + 1, "rungs": sizes}
        snapshot = self.datasets.snapshot(spec.dataset, window.since, window.last)
        records = by_event_time(self.datasets.read(snapshot))  # the holdout is the newest
        if len(records) < self.min_records:
            raise NotEnoughData(model=request.model, records=len(records),
                                needed=self.min_records)
        holdout_size = max(1, int(len(records) * spec.training.holdout_fraction))
        train, holdout = records[:-holdout_size], records[-holdout_size:]
        steps = [step.model_dump() for step in spec.pipeline]
        model = build_pipeline(steps, seed=spec.training.seed)
        for _ in range(spec.training.passes):
            for record in train:
                model.learn_one(record.features, record.label)
        candidate_metrics = score(model, holdout, spec.task)
        baseline_metrics = None
        if champion is not None:
            served = self.artifacts.load_model(champion.artifact)
            if spec.serving.learn:
                self._learn_as_served(served, champion, snapshot, holdout)
            baseline_metrics = score(served, holdout, spec.task)
        # What the registry gates is exactly what serves: the candidate does not go on to
        # learn its holdout after scoring (on SEA that unscored step took a Hoeffding tree
        # from 86.8% to 64.8% served). Learning the newest records is an online learner's job.
        event = ModelTrained(
            run_id=f"run-{uuid.uuid4().hex[:12]}", model=request.model,
            request_id=request.request_id, metric=spec.policy.metric, metrics=candidate_metrics,
            holdout=Holdout(snapshot_id=snapshot.snapshot_id, start=len(train),
                            size=len(holdout)),
            baseline_version=champion.version if champion else None,
            baseline_metrics=baseline_metrics,
            lineage=Lineage(dataset=spec.dataset, snapshot_id=snapshot.snapshot_id,
                            records=snapshot.records, window=window, pipeline=steps,
                            hyperparameters=hyperparameters, seed=spec.training.seed,
                            code_version=code_version()),
            artifact=self.artifacts.save_model(model),
            reference_profile=profile(train, numeric_features(self.project.datasets[spec.dataset])),
            duration_seconds=time.perf_counter() - started)
        event = self.signer.sign_run(event)  # the registry records only what training signed
        atomic_write(self._run_path(request.request_id, rung), event.model_dump_json().encode())
        logger.info("trained %s on %d records%s: %s", request.model, len(records),
                    "" if rung is None else f" (rung {rung + 1})", _fmt(candidate_metrics),
                    extra={"run_id": event.run_id, "snapshot_id": snapshot.snapshot_id})
        return event

    def _learn_as_served(self, champion_model: Any, champion: ModelVersionView,
                         snapshot: Snapshot, holdout: list[RecordValidated]) -> int:
        """Bring the champion to what serving answers with when it learns in serving
        (`serving.learn`): its artifact plus every record logged after its training data, up
        to this run's snapshot, at most `replay_records` of the newest — but the holdout's
        own records, on which it is about to be scored. Gated against the bare artifact, a
        challenger trained on a small post-drift window could win and still be worse than
        what serves. Returns how many records it learned."""
        spec = self.project.model(champion.model)
        try:
            theirs = self.datasets.open_snapshot(champion.lineage.dataset,
                                                 champion.lineage.snapshot_id)
        except SnapshotNotFound:
            logger.warning("training snapshot of %s v%d not found: scored as its artifact",
                           champion.model, champion.version)
            return 0
        start, end = self.datasets.end_of(theirs), self.datasets.end_of(snapshot)
        if start is None or end is None:
            return 0
        learned = learn_logged(champion_model, champion.model, self.datasets, spec.dataset,
                               start, spec.serving.replay_records, end=end,
                               skip={record.record_id for record in holdout}).learned
        logger.info("champion %s v%d scored as served: learned %d records logged after its "
                    "data", champion.model, champion.version, learned)
        return learned

    def initial_requests(self, dataset: str, records_seen: int) -> list[TrainingRequested]:
        """First-training requests due now that `records_seen` records of `dataset` exist."""
        due = []
        for name in self.project.models_of(dataset):
            threshold = self.project.models[name].policy.initial_training_records
            if records_seen >= threshold and not (self.initial_dir / _safe(name)).exists():
                due.append(TrainingRequested(
                    request_id=f"initial-{name}", model=name, reason=TrainingReason.INITIAL_DATA,
                    window=DataWindow(min_records=threshold),
                    evidence={"validated_records": records_seen, "threshold": threshold},
                    requested_by="training"))
        return due

    def mark_requested(self, model: str) -> None:
        self.initial_dir.mkdir(parents=True, exist_ok=True)
        (self.initial_dir / _safe(model)).touch()


def against_baseline(run: ModelTrained, policy: PolicySpec) -> Verdict:
    """What the registry's gate says of `run` while the champion it was scored against still
    reigns (the same comparison): whether a ladder climbs on after it."""
    if run.baseline_version is None or run.baseline_metrics is None:
        return Verdict(True, "no champion to beat: it becomes the first version")
    return compare(policy, run.metrics, run.baseline_metrics,
                   f"champion v{run.baseline_version}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in values.items())
