"""Public HTTP payloads of serving and the registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from contracts.base import Contract, FeatureValue, StrictContract
from contracts.events import (
    ARTIFACT_EXAMPLE,
    LINEAGE_EXAMPLE,
    MAX_NAME,
    MAX_PREDICTION_ID,
    MAX_REASON,
    MAX_VERSION,
    PROFILE_EXAMPLE,
    ArtifactRef,
    BinnedDistribution,
    Lineage,
)

_FEATURES = {"salary": 68_000.0, "age": 41, "car": 3}



class PredictRequest(StrictContract):
    """Body of POST /v1/models/{model}/predict for one instance."""

    features: dict[str, Any] = Field(description="Feature name to value, as declared by the "
                                     "model's dataset.", examples=[_FEATURES])


class BatchPredictRequest(StrictContract):
    """Body of POST /v1/models/{model}/predict for several instances."""

    instances: list[dict[str, Any]] = Field(min_length=1, max_length=10_000,
                                            description="Feature mappings, one per instance.",
                                            examples=[[_FEATURES]])


class FeedbackItem(StrictContract):
    """Body of POST /v1/feedback (or one item of a list of them): the observed label of a
    prediction, named by the `prediction_id` serving answered with."""

    prediction_id: str = Field(min_length=1, max_length=MAX_PREDICTION_ID,
                               description="Id of the prediction, as serving answered it.",
                               examples=["3f9c2a7b1e0d4c56a8b9e0f1a2b3c4d5"])
    label: FeatureValue = Field(description="The observed target value.", examples=[1])


class FeedbackAccepted(Contract):
    """Answer of POST /v1/feedback: every item was durably published."""

    accepted: int = Field(description="Feedback items published.", examples=[1])


class PredictionItem(Contract):
    """One answer in a batch."""

    prediction: FeatureValue | None = Field(description="The output.", examples=[1])
    probabilities: dict[str, float] | None = Field(
        default=None, description="Class probabilities.", examples=[{"0": 0.2, "1": 0.8}])
    prediction_id: str = Field(description="Id to send the late label with.",
                               examples=["pred-7f3a"])


class PredictResponse(Contract):
    """Answer to a single-instance predict call."""

    model: str = Field(description="Model name.", examples=["loans-tree"])
    version: int = Field(description="Version that answered.", examples=[1])
    prediction: FeatureValue | None = Field(description="The output.", examples=[1])
    probabilities: dict[str, float] | None = Field(
        default=None, description="Class probabilities.", examples=[{"0": 0.2, "1": 0.8}])
    prediction_id: str = Field(description="Id to send the late label with.",
                               examples=["pred-7f3a"])


class BatchPredictResponse(Contract):
    """Answer to a batch predict call; one version answers the whole batch."""

    model: str = Field(description="Model name.", examples=["loans-tree"])
    version: int = Field(description="Version that answered.", examples=[1])
    predictions: list[PredictionItem] = Field(
        description="One item per instance, in order.",
        examples=[[{"prediction": 1, "probabilities": {"0": 0.2, "1": 0.8},
                    "prediction_id": "pred-7f3a"}]])


MAX_ERROR_FIELDS = 20
"""Field-level problems listed in one error body; the detail says how many there were."""
MAX_ERROR_TEXT = 300
"""Longest field path or message in an error body (characters); input is never echoed whole."""
MAX_ERROR_DETAIL = 2000
"""Longest detail of an error body (characters)."""


class ValueSchema(Contract):
    """Type and allowed values of one input or of the label, as the project file declares."""

    type: str = Field(description="float, int, str or bool.", examples=["int"])
    min: float | None = Field(default=None, description="Smallest allowed number.")
    max: float | None = Field(default=None, description="Largest allowed number.")
    categories: list[str | int | bool] | None = Field(
        default=None, description="The only allowed values, when declared.")
    required: bool = Field(default=True, description="False: the input may be left out.")


class ServedVersion(Contract):
    """The version a serving process answers with."""

    version: int = Field(ge=1, le=MAX_VERSION, examples=[3])
    digest: str = Field(description="sha256 of the artifact.", examples=["sha256:9f2c..."])
    loaded_at: datetime


class ModelSchema(Contract):
    """What a model takes and gives: its dataset's inputs and label, the version serving it,
    and an example request body's `features` that passes the contract."""

    model: str = Field(examples=["loans-tree"])
    dataset: str = Field(examples=["loans"])
    task: str = Field(description="classification or regression.", examples=["classification"])
    features: dict[str, ValueSchema]
    label: ValueSchema
    serving: ServedVersion | None = Field(description="None until a champion is loaded.")
    example: dict[str, Any] = Field(description="Features of a valid request.",
                                    examples=[_FEATURES])


class KServePredictResponse(Contract):
    """Answer of KServe's v1 `POST /v1/models/{model}:predict`."""

    predictions: list[FeatureValue | None] = Field(examples=[[1, 0]])
    prediction_ids: list[str] = Field(description="Each answer's id, which feedback names.",
                                      examples=[["pred-7f3a", "pred-7f3b"]])


class ErrorDetail(Contract):
    """Every 4xx/5xx body: what went wrong, and per field where it applies. Bounded whatever the
    input: a few problems, each cut short, so a huge request never gets a huge answer."""

    error: str = Field(description="Error type.", examples=["InvalidFeatures"])
    detail: str = Field(max_length=MAX_ERROR_DETAIL, description="Message for a person.",
                        examples=["features.age: expected a number, got 'forty'"])
    fields: list[dict[str, str]] = Field(default_factory=list, max_length=MAX_ERROR_FIELDS,
                                         description="Field-level problems (the first "
                                         f"{MAX_ERROR_FIELDS}).",
                                         examples=[[{"field": "features.age",
                                                     "message": "field required"}]])


class Health(Contract):
    """Body of GET /healthz: the process answers."""

    status: str = Field(description="Always 'ok' when the process answers.", examples=["ok"])
    service: str = Field(description="Which service answered.", examples=["registry"])


class Readiness(Contract):
    """Body of GET /readyz (200 when ready, 503 when not)."""

    ready: bool = Field(description="Whether the service takes traffic.", examples=[True])
    checks: dict[str, bool] = Field(description="Each readiness check and its result.",
                                    examples=[{"consumer_assigned": True}])


class ModelVersionView(Contract):
    """A registered version as the registry API shows it."""

    model: str = Field(description="Model name.", examples=["loans-tree"])
    version: int = Field(description="Version number, from 1.", examples=[2])
    run_id: str = Field(description="Training run.", examples=["run-81aa"])
    request_id: str | None = Field(default=None, description="Training request it answered.",
                                   examples=["req-5c1d"])
    stage: str = Field(description="champion, candidate, rejected or archived.",
                       examples=["champion"])
    metric: str = Field(description="Promotion metric name.", examples=["accuracy"])
    metrics: dict[str, float] = Field(description="Holdout metrics.",
                                      examples=[{"accuracy": 0.88}])
    baseline_version: int | None = Field(default=None, description="Champion it was compared "
                                         "with.", examples=[1])
    baseline_metrics: dict[str, float] | None = Field(default=None, description="That champion's "
                                                      "metrics on the same holdout.",
                                                      examples=[{"accuracy": 0.58}])
    artifact: ArtifactRef = Field(description="Artifact reference.", examples=[ARTIFACT_EXAMPLE])
    lineage: Lineage = Field(description="Data and code the version came from.",
                             examples=[LINEAGE_EXAMPLE])
    reference_profile: dict[str, BinnedDistribution] = Field(
        default_factory=dict, description="Training distribution of numeric features.",
        examples=[PROFILE_EXAMPLE])
    decision: str | None = Field(default=None, description="Last lifecycle decision's reason.",
                                 examples=["first version of the model"])
    created_at: datetime = Field(description="When registered.",
                                 examples=["2026-11-22T10:07:01Z"])
    decision_sequence: int | None = Field(default=None, description="Sequence of the latest "
                                          "registry decision about this version (as on "
                                          "models.lifecycle): lets a reader refuse older "
                                          "decisions replayed on the topic.", examples=[7])


class ModelView(Contract):
    """A model and its current champion."""

    model: str = Field(description="Model name.", examples=["loans-tree"])
    champion_version: int | None = Field(description="Version serving, if any.", examples=[2])
    versions: int = Field(description="Number of registered versions.", examples=[2])


class PromoteRequest(StrictContract):
    """Body of a manual promotion."""

    version: int = Field(ge=1, le=MAX_VERSION, description="Version to make champion.",
                         examples=[1])
    reason: str = Field(min_length=1, max_length=MAX_REASON, description="Why, for the audit "
                        "trail.", examples=["roll forward after incident review"])
    actor: str | None = Field(default=None, max_length=MAX_NAME, deprecated=True,
                              description="Ignored, kept so older clients are not refused: the "
                              "audit log's actor is the owner of the bearer token.",
                              examples=[None])


class RollbackRequest(StrictContract):
    """Body of a manual rollback to the previous champion."""

    reason: str = Field(min_length=1, max_length=MAX_REASON, description="Why, for the audit "
                        "trail.", examples=["v3 misbehaves on EU traffic"])
    actor: str | None = Field(default=None, max_length=MAX_NAME, deprecated=True,
                              description="Ignored, kept so older clients are not refused: the "
                              "audit log's actor is the owner of the bearer token.",
                              examples=[None])


class TrainRequest(StrictContract):
    """Body of a manual training request (POST /v1/models/{model}/train on training)."""

    last: int | None = Field(default=None, ge=1, le=10_000_000, description="Train on at most "
                             "this many of the newest records; unset: all of them.",
                             examples=[2000])
    reason: str | None = Field(default=None, max_length=MAX_REASON, description="Why, kept as the "
                               "request's evidence.", examples=["new features landed"])


class TrainAccepted(Contract):
    """Answer to a manual training request: it is queued on training.requests."""

    request_id: str = Field(description="Id of the queued request; the trained version "
                            "carries it.", examples=["manual-3f2a9c1d0b7e"])
    model: str = Field(description="Model name.", examples=["loans-tree"])
    requested_by: str = Field(description="Owner of the token that asked.",
                              examples=["alice"])


class AuditEntry(Contract):
    """One line of a model's audit log."""

    model: str = Field(description="Model name.", examples=["loans-tree"])
    version: int = Field(description="Version concerned.", examples=[2])
    action: str = Field(description="Lifecycle action.", examples=["promoted"])
    reason: str = Field(description="Why.", examples=["first version of the model"])
    actor: str = Field(description="policy, or the owner of the token that acted.",
                       examples=["policy"])
    at: datetime = Field(description="When.", examples=["2026-11-22T10:07:01Z"])


class LatencySummary(Contract):
    """Model latency in a window: mean, and quantiles as the upper bound of their bucket."""

    mean: float | None = Field(description="Mean seconds.", examples=[0.00004])
    p50: float | None = Field(description="Median (bucket bound), seconds.", examples=[0.0001])
    p99: float | None = Field(description="99th percentile (bucket bound), seconds; null "
                              "above the last bucket (30 s).", examples=[0.00025])


class LiveWindowView(Contract):
    """One tumbling window of one version."""

    version: int = Field(description="Version that answered.", examples=[3])
    start: datetime = Field(description="Window start (prediction time).",
                            examples=["2026-11-22T10:08:00Z"])
    end: datetime = Field(description="Window end.", examples=["2026-11-22T10:09:00Z"])
    predictions: int = Field(description="Predictions made in the window.", examples=[1200])
    labeled: int = Field(description="Of those, labeled so far (labels count in the window "
                         "of their prediction, however late).", examples=[800])
    accuracy: float | None = Field(default=None, description="Classifiers: accuracy of the "
                                   "labeled ones.", examples=[0.93])
    mae: float | None = Field(default=None, description="Regressors: mean absolute error of "
                              "the labeled ones.", examples=[1.9])
    outputs: dict[str, float | int | None] = Field(
        description="Classifiers: predictions per class; regressors: mean and std.",
        examples=[{"0": 500, "1": 700}])
    latency_seconds: LatencySummary = Field(description="Model latency.")
    drift_psi: dict[str, float] = Field(description="PSI of each watched feature's inputs "
                                        "against the serving version's training profile.",
                                        examples=[{"salary": 0.02}])


class LiveView(Contract):
    """Answer of GET /v1/models/{model}/live."""

    model: str = Field(description="Model name.", examples=["loans-tree"])
    window_seconds: int = Field(description="Window size.", examples=[60])
    windows: list[LiveWindowView] = Field(description="Kept windows, oldest first.")


# -- the Open Inference Protocol (V2), as KServe, Triton and MLServer speak it -------------


class V2Tensor(Contract):
    """One input or output tensor of a V2 inference call, its data flattened row-major."""

    name: str = Field(max_length=MAX_NAME, examples=["age"])
    shape: list[int] = Field(min_length=1, max_length=2, examples=[[2, 1]])
    datatype: str = Field(description="BOOL, INT64, FP64 or BYTES (FP32, INT8–INT32 and "
                          "UINT8–UINT64 are read as numbers too).", examples=["INT64"])
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(max_length=10_000, examples=[[41, 57]])


class V2RequestedOutput(Contract):
    name: str = Field(max_length=MAX_NAME, examples=["prediction"])
    parameters: dict[str, Any] | None = None


class V2InferRequest(Contract):
    """Body of POST /v2/models/{model}/infer: one input tensor per feature of the model's
    dataset (a named column each, as MLServer's pandas codec reads them), one row per
    instance."""

    id: str | None = Field(default=None, max_length=MAX_PREDICTION_ID)
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1_000)
    outputs: list[V2RequestedOutput] | None = None


class V2InferResponse(Contract):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2Tensor]


class V2TensorMetadata(Contract):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(Contract):
    """GET /v2/models/{model}: the inputs a model takes (one per feature) and its outputs."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(Contract):
    name: str
    version: str
    extensions: list[str]
