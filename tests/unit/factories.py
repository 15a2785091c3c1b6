"""Test data for the unit tests: the demo project, seeded Agrawal rows and event factories."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from river.datasets import synth

from contracts.events import (
    ArtifactRef,
    DataWindow,
    Holdout,
    LabeledRecord,
    Lineage,
    ModelTrained,
    PredictionMade,
    RecordValidated,
)
from shared.project import Project, load_project
from shared.signing import Signer

TRAINING_KEY = Signer(Ed25519PrivateKey.generate(), "training")
"""Training's key pair in the unit tests (the registry verifies with its public half)."""
REGISTRY_KEY = Signer(Ed25519PrivateKey.generate(), "registry")
"""The registry's key pair in the unit tests (serving and monitoring verify with it)."""
ATTACKER_KEY = Signer(Ed25519PrivateKey.generate(), "training")
"""A well-formed key that nobody trusts."""

PROJECT_FILE = Path(__file__).resolve().parents[2] / "driftloop.toml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def demo_project() -> Project:
    return load_project(PROJECT_FILE)


def project_with(**policy: Any) -> Project:
    """The demo project with some policy fields of `loans-tree` replaced."""
    raw = demo_project().model_dump(mode="json")
    raw["models"]["loans-tree"]["policy"].update(policy)
    return Project.model_validate(raw)


def agrawal(n: int, seed: int = 7) -> list[tuple[dict[str, Any], int]]:
    return list(synth.Agrawal(seed=seed).take(n))


def labeled(index: int, features: dict[str, Any] | None = None, label: Any = 1,
            dataset: str = "loans", record_id: str | None = None) -> LabeledRecord:
    if features is None:
        features, label = agrawal(index + 1)[index]
    return LabeledRecord(dataset=dataset, record_id=record_id or f"rec-{index:06d}",
                         features=features, label=label)


def validated_rows(n: int, first_sequence: int = 0, seed: int = 7, prefix: str = "rec",
                   ingested_at: datetime = T0) -> list[RecordValidated]:
    return [RecordValidated(dataset="loans", record_id=f"{prefix}-{first_sequence + i:06d}",
                            features=x, label=y, event_time=ingested_at, ingested_at=ingested_at,
                            sequence=first_sequence + i)
            for i, (x, y) in enumerate(agrawal(n, seed))]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def model_trained(run_id: str, accuracy: float, baseline_version: int | None = None,
                  baseline_accuracy: float | None = None, model: str = "loans-tree",
                  metric: str = "accuracy") -> ModelTrained:
    snapshot_id = digest(f"snapshot-{run_id}")
    return TRAINING_KEY.sign_run(ModelTrained(
        run_id=run_id, model=model, request_id=f"req-{run_id}", metric=metric,
        metrics={metric: accuracy},
        holdout=Holdout(snapshot_id=snapshot_id, start=800, size=200),
        baseline_version=baseline_version,
        baseline_metrics=(None if baseline_accuracy is None
                          else {metric: baseline_accuracy}),
        lineage=Lineage(dataset="loans", snapshot_id=snapshot_id, records=1000,
                        window=DataWindow(), pipeline=[{"estimator": "tree.HoeffdingTreeClassifier",
                                                        "params": {}}],
                        seed=42, code_version="test"),
        artifact=ArtifactRef(digest=digest(f"artifact-{run_id}"),
                             signature=TRAINING_KEY.sign_artifact(digest(f"artifact-{run_id}")),
                             size_bytes=10),
        duration_seconds=0.1))


def prediction(index: int, version: int, predicted: Any = 1,
               features: dict[str, Any] | None = None) -> PredictionMade:
    return PredictionMade(prediction_id=f"pred-{index}", model="loans-tree", version=version,
                          features=features or {"age": 40}, prediction=predicted,
                          latency_seconds=0.0, at=T0 + timedelta(seconds=index))


def label_for(index: int, label: Any, at: datetime | None = None) -> RecordValidated:
    when = at or T0 + timedelta(seconds=index)
    return RecordValidated(dataset="loans", record_id=f"lab-{index}", features={"age": 40},
                           label=label, event_time=when, ingested_at=when, sequence=index,
                           prediction_id=f"pred-{index}")


def token_entry(token: str, name: str = "op", role: str = "operator") -> dict[str, str]:
    """A DRIFTLOOP_AUTH_TOKENS entry that accepts `token` (its digest only, as services hold
    it): what route tests give the settings so their calls pass the auth guard."""
    from shared.tokens import digest

    return {"name": name, "role": role, "sha256": digest(token)}
