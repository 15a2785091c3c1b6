"""The project file: datasets, models, monitors and policies, declared in one TOML file.

TOML because it is in the standard library (tomllib), has comments, and maps
one-to-one onto these pydantic models, which validate it at start-up: a typo
fails fast with the path of the offending key.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import ConfigError, ModelNotFound
from shared.pipelines import DETECTORS, validate_step


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValueType(StrEnum):
    """Declared type of a feature or label."""

    FLOAT = "float"
    INT = "int"
    STR = "str"
    BOOL = "bool"


class ValueSpec(_Spec):
    """Type and allowed values of one feature or of the label."""

    type: ValueType
    min: float | None = None
    max: float | None = None
    categories: list[str | int | bool] | None = None
    required: bool = True


def example_value(spec: ValueSpec) -> str | int | float | bool:
    """A value the spec allows: its first category, else the middle of its range (or a
    bound, or zero)."""
    if spec.categories:
        return spec.categories[0]
    if spec.type is ValueType.BOOL:
        return False
    if spec.type is ValueType.STR:
        return "text"
    low, high = spec.min, spec.max
    middle = ((low + high) / 2 if low is not None and high is not None
              else low if low is not None else high if high is not None else 0.0)
    return round(middle) if spec.type is ValueType.INT else float(middle)


class DatasetSpec(_Spec):
    """A dataset's contract: its features and label."""

    features: dict[str, ValueSpec] = Field(min_length=1)
    label: ValueSpec

    def example(self) -> dict[str, str | int | float | bool]:
        """Features of a record that passes this contract (for API examples)."""
        return {name: example_value(spec) for name, spec in self.features.items()}


class PipelineStep(_Spec):
    """One allowlisted River estimator and its parameters."""

    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _allowlisted(self) -> PipelineStep:
        validate_step(self.model_dump())
        return self


class ConceptDriftMonitor(_Spec):
    """A River detector on the 0/1 error stream of the served model."""

    detector: str = "ADWIN"
    params: dict[str, Any] = Field(default_factory=lambda: {"delta": 0.002})
    min_samples: int = Field(default=100, ge=1)
    """Labeled predictions a version must have before its drift alarms count."""
    min_error_increase: float = Field(default=0.05, ge=0)
    """Classification: an alarm counts only when the recent error rate rose by at least this
    much (and a drift alert resolves within this much of the holdout's error rate)."""
    min_relative_increase: float = Field(default=0.25, ge=0)
    """Regression: the same on the mean absolute residual, as a fraction of the level it
    rose from (0.25: MAE 25% above the baseline), since residuals carry the target's unit."""

    @field_validator("detector")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DETECTORS:
            raise ValueError(f"detector {value!r} is not allowed (allowed: {', '.join(DETECTORS)})")
        return value


class DataDriftMonitor(_Spec):
    """Population stability of input features against the training distribution, checked
    on every prediction over two sliding windows of the newest inputs."""

    features: list[str] = Field(default_factory=list)
    """Numeric features to watch (empty: every numeric feature)."""
    window: int = Field(default=500, ge=50)
    """The longer sliding window (predictions): sensitive to small shifts, and the one on
    which a drift is over (PSI below half the threshold)."""
    min_samples: int = Field(default=100, ge=20)
    """The shorter sliding window, and the fewest predictions checked: a clear shift warns
    within about this many predictions."""
    psi_threshold: float = Field(default=0.25, gt=0)
    """Population Stability Index above which a feature drifted (the size of the shift)."""
    alpha: float = Field(default=1e-7, gt=0, lt=0.01)
    """Significance the shift must also reach (G-test against the reference fractions):
    tiny, since the test is repeated on every prediction (≤ 1 false alarm per 100k
    stationary predictions measured with the defaults)."""

    @model_validator(mode="after")
    def _short_within_long(self) -> DataDriftMonitor:
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must not exceed window "
                             f"({self.window})")
        return self


class LiveSpec(_Spec):
    """Live metrics per model version in tumbling windows (GET /v1/models/{model}/live and
    Prometheus)."""

    windows_seconds: list[int] = Field(default_factory=lambda: [60, 3600], min_length=1,
                                       max_length=4)
    """Window sizes, in seconds (e.g. a minute and an hour)."""
    retain: int = Field(default=60, ge=1, le=1440)
    """Windows kept per size and version."""
    versions: int = Field(default=3, ge=1, le=20)
    """Newest versions of a model kept (older ones' windows and metric labels are dropped)."""

    @field_validator("windows_seconds")
    @classmethod
    def _positive_distinct(cls, sizes: list[int]) -> list[int]:
        if any(size <= 0 for size in sizes) or len(set(sizes)) != len(sizes):
            raise ValueError("window sizes must be distinct positive seconds")
        return sorted(sizes)


class MonitorSpec(_Spec):
    """What monitoring watches for a model."""

    live: LiveSpec = Field(default_factory=LiveSpec)

    concept: ConceptDriftMonitor = Field(default_factory=ConceptDriftMonitor)
    data: DataDriftMonitor = Field(default_factory=DataDriftMonitor)
    label_ttl_seconds: float = Field(default=3600, gt=0)
    """How long a prediction waits for its label."""
    max_pending_predictions: int = Field(default=200_000, ge=1)
    """Bound on predictions held for joining (oldest dropped first)."""
    recovery_samples: int = Field(default=200, ge=1)
    """Labeled predictions of a new version before its alert can resolve."""


class PolicySpec(_Spec):
    """Promotion and retraining policy of a model."""

    metric: str = "accuracy"
    promotion_margin: float = Field(default=0.0, ge=0)
    """A candidate must beat the champion on the same holdout by at least this much."""
    initial_training_records: int = Field(default=1000, ge=1)
    """Validated records that trigger the first training request."""
    retrain_on_drift: bool = True
    retrain_min_records: int = Field(default=1000, ge=1)
    """Post-drift records a drift retrain waits for."""
    retrain_max_records: int = Field(default=5000, ge=1)
    """At most this many of the newest records in a retrain window."""
    retrain_cooldown_seconds: float = Field(default=60, ge=0)
    """Minimum time between two drift retrains of one model (0: no time guard)."""
    retrain_cooldown_samples: int = Field(default=0, ge=0)
    """Minimum labeled predictions of the model between two drift retrains. Counted on the
    served stream, so the guard against flapping is the same at any traffic rate; when both
    cooldowns are set, both must have passed."""
    retrain_windows: list[int] = Field(default_factory=list)
    """Progressive challengers: on a drift alarm, train on post-change windows of these
    sizes in turn (e.g. [200, 500, 1000, 2000]) as the data arrives, each candidate competing
    with the champion of its time, until one stops improving: a rung that does not beat its
    champion ends the ladder once an earlier rung did (before that, a larger window is
    tried). Empty: one
    window of `retrain_min_records`..`retrain_max_records` records."""
    max_retrains_per_hour: int = Field(default=6, ge=1, le=3600)
    """Training requests (any reason) accepted per model per hour; more are refused,
    dead-lettered and alerted, so a flood of requests cannot flood the registry."""
    retrain_timeout_seconds: float = Field(default=900, gt=0)
    """A retrain with no registry decision after this long is presumed lost (e.g. its request
    was dead-lettered), so drift may request another."""


class OnlineSpec(_Spec):
    """An online learner: one writer learns every validated record of the dataset in order,
    as it arrives, and publishes a snapshot as a candidate version now and then."""

    snapshot_every_records: int = Field(default=500, ge=1)
    """Records learned between two snapshots."""
    snapshot_every_seconds: float = Field(default=0, ge=0)
    """Also snapshot after this long with at least one new record (0: by records only)."""
    prequential_window: int = Field(default=500, ge=10)
    """Newest records on which a snapshot and the champion are scored test-then-train: the
    registry gates a snapshot on the recent stream, not on a stale holdout."""
    warm_up_records: int = Field(default=200, ge=1)
    """Records learned before the first snapshot is offered."""
    early_snapshot_records: int = Field(default=50, ge=0)
    """Snapshot before the cadence as soon as the learner beats the champion on at least this
    many records the champion never learned (by the policy's margin, and significantly: a
    paired test on the two's losses), with as many new since the last snapshot. After a
    drift this is what brings an adapted learner to serving within tens of records rather
    than a whole cadence. 0: only by the cadence."""
    offer_when_better: bool = True
    """At the cadence, offer a snapshot only when it beats the champion on the compared
    records by the registry's own comparison (the registry still gates it). False: offer every
    one, for an audit trail of each (an ARF(10) snapshot is ~3–13 MB: each is stored)."""


class ServingSpec(_Spec):
    """How serving treats the versions of a model between two registry decisions."""

    learn: bool = False
    """Serving goes on learning the version it serves with every record the dataset store
    logs after the data that version was trained on, in log order, so the served model is
    never older than the newest label (what an in-process River loop does). Each prediction
    event then says up to which log position the answering model had learned: version plus
    positions name exactly the model that answered. Every replica learns the same records in
    the same order from the same artifact, so replicas agree. False: serve each version
    exactly as the registry gated it."""
    replay_records: int = Field(default=50_000, ge=0)
    """On a swap, at most this many of the newest records logged after the version's data
    are learned before it serves (off the request path); older ones are skipped."""


class TrainingSpec(_Spec):
    """How a model is trained."""

    passes: int = Field(default=1, ge=1, le=50)
    """Epochs over the training slice (in order each pass)."""
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    """Newest fraction of the snapshot held out for evaluation."""
    seed: int = 42


class ModelSpec(_Spec):
    """A model: its data, pipeline, training, monitors and policy."""

    dataset: str
    task: str = "classification"
    pipeline: list[PipelineStep] = Field(min_length=1)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    online: OnlineSpec | None = None
    """Learn online (see OnlineSpec); drift-triggered batch challengers still compete."""
    serving: ServingSpec = Field(default_factory=ServingSpec)
    """Whether serving goes on learning between versions (see ServingSpec)."""


class Project(_Spec):
    """The whole project file."""

    name: str = "driftloop"
    datasets: dict[str, DatasetSpec]
    models: dict[str, ModelSpec]

    @model_validator(mode="after")
    def _models_use_declared_datasets(self) -> Project:
        for name, model in self.models.items():
            if model.dataset not in self.datasets:
                raise ValueError(f"model {name!r} uses undeclared dataset {model.dataset!r}")
            features = self.datasets[model.dataset].features
            for feature in model.monitor.data.features:
                if feature not in features:
                    raise ValueError(f"model {name!r} monitors undeclared feature {feature!r}")
        return self

    def model(self, name: str) -> ModelSpec:
        """The spec of a declared model."""
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(model=name) from None

    def models_of(self, dataset: str) -> list[str]:
        """Names of the models trained on a dataset."""
        return [name for name, spec in self.models.items() if spec.dataset == dataset]


def load_project(path: Path) -> Project:
    """Read and validate a project file, failing fast with a readable message."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(detail=f"project file {path} not found; set DRIFTLOOP_CONFIG or "
                          "pass --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(detail=f"project file {path} is not valid TOML: {exc}") from None
    try:
        return Project.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(detail=f"project file {path}: {problems}") from None
