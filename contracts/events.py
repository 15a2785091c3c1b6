"""Events carried on the topics of `contracts.topics.Topic`.

Events are named in the past tense; `TrainingRequested` is the event of a
request to act. Within a major version only optional fields are added.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from contracts.base import Contract, FeatureValue, StrictContract, utcnow

_FEATURES_EXAMPLE: dict[str, FeatureValue] = {"salary": 68_000.0, "age": 41, "car": 3}
ARTIFACT_EXAMPLE: dict[str, Any] = {"digest": "ab" * 32, "signature": "cd" * 64,
                                    "size_bytes": 48213, "format": "river-pickle"}
LINEAGE_EXAMPLE: dict[str, Any] = {
    "dataset": "loans", "snapshot_id": "9f" * 32, "records": 2000, "window": {"last": 2000},
    "pipeline": [{"estimator": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}}],
    "hyperparameters": {"passes": 10, "holdout_fraction": 0.2}, "seed": 42,
    "code_version": "0.1.0"}
PROFILE_EXAMPLE: dict[str, Any] = {"age": {"edges": [30.0, 50.0], "fractions": [0.3, 0.4, 0.3]}}
MAX_PREDICTION_ID = 200
"""Longest prediction id a label may name (serving's own are 32 characters)."""
MAX_REASON = 1000
"""Longest free-text reason (characters), in events and HTTP bodies alike: it is stored in the
registry's audit log and must fit, with the rest of its event, in one broker message."""
MAX_NAME = 200
"""Longest name or actor (characters), as the registry's columns store them."""
MAX_VERSION = 2**31 - 1
"""Largest version number: the registry stores versions as 32-bit integers (PostgreSQL
INTEGER), so a larger one is refused as invalid input, never sent to the database."""
MAX_EVIDENCE_BYTES = 16 * 1024
"""Largest training-request evidence (its JSON, bytes): it travels into the run's lineage,
the registry's database and every lifecycle event of the version."""


class LabeledRecord(StrictContract):
    """A labeled record published by any producer on data.labeled (key = record_id).

    Two shapes: a whole record (dataset, record_id, features, label; `prediction_id` when it
    is the late label of a prediction), or feedback alone (`prediction_id` and `label`, no
    dataset, id or features): the prediction's own features and model complete it."""

    dataset: str | None = Field(default=None, description="Name of a dataset declared in the "
                                "project file (required unless the record is feedback alone).",
                                examples=["loans"])
    record_id: str | None = Field(default=None, min_length=1, description="Unique id of the "
                                  "record; duplicates are dropped by ingestion (required unless "
                                  "the record is feedback alone).", examples=["rec-000042"])
    features: dict[str, FeatureValue] | None = Field(
        default=None, description="Feature name to value (required unless the record is "
        "feedback alone).", examples=[_FEATURES_EXAMPLE])
    label: FeatureValue = Field(description="The observed target value.", examples=[1])
    event_time: datetime | None = Field(default=None, description="When the record was observed "
                                        "(RFC 3339); defaults to ingestion time.",
                                        examples=["2026-11-22T10:00:00Z"])
    prediction_id: str | None = Field(default=None, max_length=MAX_PREDICTION_ID,
                                      description="Set when this record is the late "
                                      "label of an earlier prediction.",
                                      examples=["pred-7f3a"])

    @model_validator(mode="before")
    @classmethod
    def _whole_or_feedback(cls, data: Any) -> Any:
        """Name every missing part at once: a whole record, or feedback alone."""
        if not isinstance(data, dict):
            return data
        whole = ("dataset", "record_id", "features", "label")
        if "prediction_id" in data and not any(part in data for part in whole[:3]):
            needed: tuple[str, ...] = ("label",)  # feedback alone
        else:
            needed = whole
        missing = [part for part in needed if part not in data]
        if missing and missing != ["label"]:  # the label alone: pydantic names that field
            raise ValueError(f"missing {', '.join(missing)}: a record needs dataset, "
                             "record_id, features and label, or only prediction_id and label "
                             "(feedback)")
        return data

    @property
    def message_key(self) -> str:
        """Its key on data.labeled: the record id, or the prediction id of feedback alone."""
        return self.record_id or self.prediction_id or ""

    @property
    def is_feedback(self) -> bool:
        """Only a prediction id and its label: the prediction supplies the rest."""
        return self.features is None


class Feedback(Contract):
    """The observed label of one prediction, known by its id alone (key = prediction_id).

    Serving publishes it for `POST /v1/feedback`, ingestion for a label-only record on
    data.labeled; monitoring joins it with the prediction, which supplies the model, version
    and features."""

    prediction_id: str = Field(min_length=1, max_length=MAX_PREDICTION_ID,
                               description="Id of the prediction, as serving answered it.",
                               examples=["pred-7f3a"])
    label: FeatureValue = Field(description="The observed target value.", examples=[1])
    at: datetime = Field(default_factory=utcnow, description="When it was received.",
                         examples=["2026-11-22T10:09:00Z"])
    source: str = Field(default="http", max_length=MAX_NAME,
                        description="How it came: http or data.labeled.", examples=["http"])
    stored: bool = Field(default=False, description=(
        "True: the label came in a whole record, already in the dataset (ingestion forwards "
        "it here so it meets its prediction on the same partition); monitoring scores it "
        "but does not complete it into a record."), examples=[False])


class RecordValidated(Contract):
    """A record that passed its dataset contract, normalised, as stored by ingestion."""

    dataset: str = Field(description="Dataset name.", examples=["loans"])
    record_id: str = Field(description="Unique id of the record.", examples=["rec-000042"])
    features: dict[str, FeatureValue] = Field(description="Declared features only, typed as "
                                              "declared.", examples=[_FEATURES_EXAMPLE])
    label: FeatureValue = Field(description="Label, typed as declared.", examples=[1])
    event_time: datetime = Field(description="When the record was observed.",
                                 examples=["2026-11-22T10:00:00Z"])
    ingested_at: datetime = Field(description="When ingestion stored the record.",
                                  examples=["2026-11-22T10:00:01Z"])
    sequence: int = Field(ge=0, description="Position of the record in its dataset's log.",
                          examples=[41])
    prediction_id: str | None = Field(default=None, description="The prediction this record "
                                      "labels, if any.", examples=["pred-7f3a"])


class FieldError(Contract):
    """One reason a payload was refused, tied to the field at fault."""

    field: str = Field(description="Dotted path of the field at fault ('' for the whole value).",
                       examples=["features.age"])
    message: str = Field(description="What was wrong, for a person.",
                         examples=["expected a number, got 'forty'"])


class RecordRejected(Contract):
    """A dead letter: the original bytes of a message that could not be used, and why."""

    source_topic: str = Field(description="Topic the message was read from.",
                              examples=["data.labeled"])
    partition: int = Field(description="Partition it was read from.", examples=[0])
    offset: int = Field(description="Its offset in that partition.", examples=[1234])
    key: str | None = Field(default=None, description="Message key, decoded as UTF-8 "
                            "(replacement characters where it is not).", examples=["rec-000042"])
    value_base64: str = Field(description="The original value bytes, base64.",
                              examples=["eyJkYXRhc2V0IjogImxvYW5zIn0="])
    value_text: str | None = Field(default=None, description="The original value as UTF-8 text "
                                   "when it is valid UTF-8, for people reading the topic.",
                                   examples=['{"dataset": "loans"}'])
    reason: str = Field(description="Summary of why it was rejected.",
                        examples=["features.age: expected a number, got 'forty'"])
    errors: list[FieldError] = Field(default_factory=list, description="Each problem found.",
                                     examples=[[{"field": "features.age",
                                                 "message": "expected a number, got 'forty'"}]])
    rejected_by: str = Field(description="Service that rejected it.", examples=["ingestion"])
    rejected_at: datetime = Field(default_factory=utcnow, description="When.",
                                  examples=["2026-11-22T10:00:01Z"])


class TrainingReason(StrEnum):
    """Why a training run was requested."""

    INITIAL_DATA = "initial_data"
    DRIFT = "drift"
    SCHEDULE = "schedule"
    MANUAL = "manual"


class DataWindow(Contract):
    """Which validated records to train on; resolved by training to an immutable snapshot."""

    since: datetime | None = Field(default=None, description="Only records ingested at or after "
                                   "this time.", examples=["2026-11-22T10:05:00Z"])
    last: int | None = Field(default=None, ge=1, description="At most this many of the newest "
                             "records (after `since`).", examples=[2000])
    min_records: int = Field(default=1, ge=1, description="Wait (up to the training service's "
                             "limit) until the window holds at least this many records.",
                             examples=[500])


class TrainingRequested(Contract):
    """A request to train a model on a window of data (key = model)."""

    request_id: str = Field(max_length=MAX_NAME, description="Unique id; training runs each "
                            "request once.", examples=["req-5c1d"])
    model: str = Field(max_length=MAX_NAME, description="Model name from the project file.",
                       examples=["loans-tree"])
    reason: TrainingReason = Field(description="Why training was requested.", examples=["drift"])
    window: DataWindow = Field(default_factory=DataWindow, description="The data to train on.",
                               examples=[{"since": "2026-11-22T10:05:00Z", "min_records": 500}])
    evidence: dict[str, Any] = Field(default_factory=dict, description="What motivated the "
                                     "request (e.g. the alert that fired).",
                                     examples=[{"alert_id": "al-91", "error_rate": 0.41}])
    requested_by: str = Field(max_length=MAX_NAME, description="Service or person that asked.",
                              examples=["monitoring"])
    requested_at: datetime = Field(default_factory=utcnow, description="When.",
                                   examples=["2026-11-22T10:06:00Z"])

    @field_validator("evidence")
    @classmethod
    def _bounded_evidence(cls, evidence: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(evidence, default=str))
        if size > MAX_EVIDENCE_BYTES:
            raise ValueError(f"evidence is {size} bytes of JSON; at most {MAX_EVIDENCE_BYTES}")
        return evidence


class ArtifactRef(Contract):
    """Where a model artifact is and how to verify it before loading."""

    digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the artifact bytes; "
                        "also its address in the artifact store.", examples=["ab" * 32])
    signature: str = Field(description="Training's Ed25519 signature over the digest (claims "
                           "`{kind: artifact.v1, digest}`), hex: only artifacts training "
                           "produced verify.", examples=["cd" * 64])
    size_bytes: int = Field(ge=0, description="Artifact size.", examples=[48213])
    format: str = Field(default="river-pickle", description="Serialisation format.",
                        examples=["river-pickle"])


class Holdout(Contract):
    """The time-ordered evaluation slice a run was scored on."""

    snapshot_id: str = Field(description="Snapshot the slice belongs to.", examples=["9f" * 32])
    start: int = Field(ge=0, description="Index of the first holdout record in the snapshot.",
                       examples=[1600])
    size: int = Field(ge=0, description="Number of holdout records.", examples=[400])


class Lineage(Contract):
    """Everything needed to reproduce a run."""

    dataset: str = Field(description="Dataset name.", examples=["loans"])
    snapshot_id: str = Field(description="Content hash of the training snapshot manifest.",
                             examples=["9f" * 32])
    records: int = Field(ge=0, description="Records in the snapshot.", examples=[2000])
    window: DataWindow = Field(description="The requested window.", examples=[{"last": 2000}])
    pipeline: list[dict[str, Any]] = Field(description="Pipeline spec: allowlisted River classes "
                                           "and their parameters, in order.",
                                           examples=[[{"estimator": "tree.HoeffdingTreeClassifier",
                                                       "params": {"grace_period": 50}}]])
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="Training "
                                            "hyperparameters (passes, holdout fraction).",
                                            examples=[{"passes": 3, "holdout_fraction": 0.2}])
    seed: int = Field(description="Seed used for every random choice.", examples=[42])
    code_version: str = Field(description="driftloop version (and git revision when known).",
                              examples=["0.1.0+3e1f2a9"])


class BinnedDistribution(Contract):
    """A feature's reference distribution: bin edges and the fraction in each bin."""

    edges: list[float] = Field(description="Inner bin edges, ascending (n edges → n+1 bins).",
                               examples=[[20.0, 40.0, 60.0]])
    fractions: list[float] = Field(description="Fraction of training records in each bin.",
                                   examples=[[0.2, 0.3, 0.3, 0.2]])


class ModelTrained(Contract):
    """A candidate model version produced by training (key = model)."""

    # Bounded as the registry's columns store them: anything longer is refused as the
    # contract (dead-lettered), never sent to the database.
    run_id: str = Field(max_length=100, description="Unique id of the training run.",
                        examples=["run-81aa"])
    model: str = Field(max_length=MAX_NAME, description="Model name.", examples=["loans-tree"])
    request_id: str = Field(max_length=MAX_NAME, description="The training request this run "
                            "answers.", examples=["req-5c1d"])
    metric: str = Field(max_length=50, description="Name of the metric promotion compares.",
                        examples=["accuracy"])
    metrics: dict[str, float] = Field(description="Metrics on the holdout.",
                                      examples=[{"accuracy": 0.91}])
    holdout: Holdout = Field(description="What the metrics were measured on.",
                             examples=[{"snapshot_id": "9f" * 32, "start": 1600, "size": 400}])
    baseline_version: int | None = Field(default=None, ge=1, le=MAX_VERSION,
                                         description="Champion version that was scored on "
                                         "the same holdout, if there was one.", examples=[1])
    baseline_metrics: dict[str, float] | None = Field(default=None, description="That champion's "
                                                      "metrics on the same holdout.",
                                                      examples=[{"accuracy": 0.58}])
    lineage: Lineage = Field(description="How to reproduce the run.", examples=[LINEAGE_EXAMPLE])
    artifact: ArtifactRef = Field(description="The stored model.", examples=[ARTIFACT_EXAMPLE])
    reference_profile: dict[str, BinnedDistribution] = Field(
        default_factory=dict, description="Training distribution of numeric features, the "
        "reference for data-drift detection.",
        examples=[PROFILE_EXAMPLE])
    trained_at: datetime = Field(default_factory=utcnow, description="When training finished.",
                                 examples=["2026-11-22T10:07:00Z"])
    duration_seconds: float = Field(ge=0, description="Wall time of the run.", examples=[1.8])
    signature: str | None = Field(default=None, description="Training's Ed25519 signature, hex, "
                                  "over the canonical JSON of the run's claims (model, run id, "
                                  "request, artifact digest, metrics, holdout, baseline, lineage, "
                                  "reference profile). The registry refuses a run without a "
                                  "valid one.", examples=["ef" * 64])


class LifecycleAction(StrEnum):
    """What the registry decided about a version."""

    PROMOTED = "promoted"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    ARCHIVED = "archived"


class ModelLifecycleChanged(Contract):
    """A registry decision about a model version (key = model)."""

    model: str = Field(description="Model name.", examples=["loans-tree"])
    version: int = Field(ge=1, description="The version the decision is about.", examples=[2])
    action: LifecycleAction = Field(description="What happened.", examples=["promoted"])
    reason: str = Field(max_length=MAX_REASON, description="Why, for the audit trail.",
                        examples=["accuracy 0.88 beats champion v1 0.58 by ≥ 0.01"])
    run_id: str = Field(description="Training run of the version.", examples=["run-81aa"])
    artifact: ArtifactRef = Field(description="The version's artifact.",
                                  examples=[ARTIFACT_EXAMPLE])
    champion_version: int | None = Field(description="Serving version after this decision.",
                                         examples=[2])
    metrics: dict[str, float] = Field(default_factory=dict, description="The version's holdout "
                                      "metrics.", examples=[{"accuracy": 0.88}])
    reference_profile: dict[str, BinnedDistribution] = Field(
        default_factory=dict, description="The version's training feature distributions.",
        examples=[PROFILE_EXAMPLE])
    actor: str = Field(default="policy", max_length=MAX_NAME,
                       description="'policy' or the person who acted.", examples=["policy"])
    request_id: str | None = Field(default=None, description="Training request that produced "
                                   "the version, when known.", examples=["req-5c1d"])
    at: datetime = Field(default_factory=utcnow, description="When.",
                         examples=["2026-11-22T10:07:01Z"])
    sequence: int | None = Field(default=None, ge=1, description="Order of the registry's "
                                 "decisions about this model (higher is newer): a replayed older "
                                 "decision is refused.", examples=[7])
    signature: str | None = Field(default=None, description="The registry's Ed25519 signature, "
                                  "hex, over the canonical JSON of the decision (model, version, "
                                  "action, champion, sequence, artifact digest, metrics, "
                                  "reference profile, reason, actor, time). Serving and "
                                  "monitoring refuse a decision without a valid one.",
                                  examples=["ef" * 64])


class PredictionMade(Contract):
    """One prediction served over HTTP (key = prediction_id)."""

    prediction_id: str = Field(description="Unique id; labels refer to it.",
                               examples=["pred-7f3a"])
    model: str = Field(description="Model name.", examples=["loans-tree"])
    version: int = Field(ge=1, description="Version that answered.", examples=[1])
    features: dict[str, FeatureValue] = Field(description="Input features.",
                                              examples=[_FEATURES_EXAMPLE])
    prediction: FeatureValue | None = Field(description="The output (null when the model has no "
                                            "opinion yet).", examples=[1])
    probabilities: dict[str, float] | None = Field(default=None, description="Class "
                                                   "probabilities, for classifiers.",
                                                   examples=[{"0": 0.2, "1": 0.8}])
    latency_seconds: float = Field(ge=0, description="Model time for this prediction.",
                                   examples=[0.00004])
    at: datetime = Field(default_factory=utcnow, description="When.",
                         examples=["2026-11-22T10:08:00Z"])
    learned_through: int | None = Field(
        default=None, ge=0, description="For a model that learns in serving "
        "([models.X.serving] learn): the answering version had also learned every record of "
        "the dataset log before this position (the version's artifact plus those records "
        "rebuild the exact model); null when it served the artifact as gated.",
        examples=[12000])


class AlertStatus(StrEnum):
    """Alert state, Alertmanager style."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    """How urgently a person should look."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertRaised(Contract):
    """An alert for on-call engineers; a resolution reuses the alert_id (key = model)."""

    alert_id: str = Field(description="Stable id; the resolution carries the same one.",
                          examples=["al-91"])
    status: AlertStatus = Field(description="firing or resolved.", examples=["firing"])
    severity: Severity = Field(description="info, warning or critical.", examples=["critical"])
    kind: str = Field(description="What was detected.", examples=["concept_drift"])
    model: str = Field(description="Model concerned.", examples=["loans-tree"])
    summary: str = Field(description="One line for a person.",
                         examples=["loans-tree v1 error rate rose from 0.08 to 0.41"])
    evidence: dict[str, Any] = Field(default_factory=dict, description="Numbers behind it.",
                                     examples=[{"error_rate_before": 0.08,
                                                "error_rate_after": 0.41}])
    runbook: str | None = Field(default=None, description="What to do first.",
                                examples=["A retrain was requested; check models.lifecycle."])
    at: datetime = Field(default_factory=utcnow, description="When.",
                         examples=["2026-11-22T10:09:00Z"])
