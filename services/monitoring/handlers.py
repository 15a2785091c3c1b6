"""What monitoring decides: alerts to raise or resolve, retrains to request.

No Kafka or HTTP types: each method returns the events to publish.
"""

from __future__ import annotations

import base64
import logging
import math
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from contracts.events import (
    AlertRaised,
    BinnedDistribution,
    DataWindow,
    Feedback,
    LabeledRecord,
    LifecycleAction,
    ModelLifecycleChanged,
    PredictionMade,
    RecordRejected,
    RecordValidated,
    TrainingReason,
    TrainingRequested,
)
from services.monitoring import state
from services.monitoring.alerts import concept_drift_alert, data_drift_alert, measure_words
from services.monitoring.concept import ConceptWatch, DriftSignal, error_of, expected_error
from services.monitoring.data_drift import DataDriftWatch, FeatureShift
from services.monitoring.incident import DriftIncident, FiringAlert
from services.monitoring.join import LabeledPair, LabelJoin, Predicted, compact_json
from services.monitoring.live import LiveMetrics
from services.monitoring.metrics import FEEDBACK, SWAP_LATENCY_SAMPLES, SWAP_LATENCY_SECONDS
from services.monitoring.watch import ModelWatch
from shared.errors import InvalidInput
from shared.partitioning import key_index
from shared.project import Project
from shared.records import check_number, check_value, describe

logger = logging.getLogger(__name__)

FEEDBACK_JOINED = FEEDBACK.labels("joined")
FEEDBACK_DEAD_LETTERED = FEEDBACK.labels("dead_lettered")

Action = AlertRaised | TrainingRequested | LabeledRecord | RecordRejected
"""What monitoring publishes: alerts and retrain requests, and for feedback that came alone
the completed labeled record (to data.labeled) or its dead letter (to data.rejected)."""


def feedback_record_id(prediction_id: str) -> str:
    """The record id of the labeled record completed from a prediction and its feedback: one
    per prediction, so a redelivered feedback is a duplicate ingestion drops."""
    return f"feedback-{prediction_id}"


class Monitor:
    """Joins, detects, alerts and requests retrains for every model of the project."""

    def __init__(self, project: Project, clock: Callable[[], float] = time.time, *,
                 max_pending_predictions: int = 100_000,
                 max_pending_labels: int = 100_000, partitions: int = 1) -> None:
        self.project = project
        self.clock = clock
        self.partitions = partitions
        """Partitions of the inputs: a model's state lives on its name's partition."""
        self.watches = {name: self._new_watch(name) for name in project.models}
        # The project says how many predictions its models need to keep waiting; the
        # service's setting caps what this process may hold, whatever the project says.
        wanted = max((s.monitor.max_pending_predictions for s in project.models.values()),
                     default=1)
        ttl = max((s.monitor.label_ttl_seconds for s in project.models.values()), default=1.0)
        self.join = LabelJoin(min(wanted, max_pending_predictions), ttl, clock,
                              max_labels=max_pending_labels, partitions=partitions)
        self.alerts: list[AlertRaised] = []
        self.touched: set[str] = set()
        """Models fed since the last checkpoint took them (their watch must be written)."""
        self.alerted: set[str] = set()
        """Models with alerts since the last checkpoint (their alert list must be written)."""
        self._durable_joins: set[str] = set()

    def _new_watch(self, name: str) -> ModelWatch:
        spec = self.project.models[name]
        return ModelWatch(name, spec, ConceptWatch(spec.monitor.concept, spec.task),
                          DataDriftWatch(spec.monitor.data),
                          LiveMetrics(name, spec.task, spec.monitor.live,
                                      spec.monitor.data.features))

    # -- durable state --------------------------------------------------------------------

    def partition_of(self, key: str) -> int:
        """Where a model's (by name) or a prediction's (by id) state is kept."""
        return key_index(key, self.partitions)

    def changes(self, everything: bool = False) -> dict[bytes, bytes | None]:
        """The changelog records of what changed since the last call (`everything`: the whole
        state, for a changelog that lost it or a checkpoint that was torn)."""
        keys = self.join.take_changed()
        if everything:
            keys |= set(self.join.predictions.items) | set(self.join.labels.items)
            keys |= self._durable_joins
            self.touched |= set(self.watches)
            self.alerted |= set(self.watches)
        records = state.join_changes(self.join, keys, self._durable_joins)
        for name in sorted(self.touched):
            records[state.MODEL + name.encode()] = state.watch_state(self.watches[name])
        self.touched.clear()
        for name in sorted(self.alerted):
            records[state.ALERTS + name.encode()] = state.dump(
                [a for a in self.alerts if a.model == name])
        self.alerted.clear()
        return records

    def restore(self, saved: Mapping[bytes, bytes]) -> None:
        """Take up the state a checkpoint left (before its partitions are fed)."""
        self._durable_joins |= state.restore_join(self.join, saved)
        restored: list[AlertRaised] = []
        for name, watch in self.watches.items():
            data = saved.get(state.MODEL + name.encode())
            if data is not None and not state.restore_watch(watch, data):
                logger.warning("the monitor section of %s changed since the last checkpoint: "
                               "its detectors start afresh", name)
            alerts = saved.get(state.ALERTS + name.encode())
            if alerts is not None:
                restored += state.load(alerts)
        if restored:
            self.alerts = sorted(self.alerts + restored, key=lambda a: a.at)[-1000:]

    def forget(self, partitions: set[int]) -> None:
        """Drop what lives on `partitions` (another worker owns them now): their join
        entries, and their models' watches start afresh here."""
        self.join.forget(lambda key: self.partition_of(key) in partitions)
        self._durable_joins = {k for k in self._durable_joins
                               if self.partition_of(k) not in partitions}
        for name in self.watches:
            if self.partition_of(name) in partitions:
                self.watches[name] = self._new_watch(name)
                self.touched.discard(name)
                self.alerted.discard(name)

    # -- inputs ---------------------------------------------------------------------------

    def on_champion(self, model: str, version: int, reference: Mapping[str, BinnedDistribution],
                    metrics: Mapping[str, float], sequence: int | None = None) -> list[Action]:
        """A version started serving: new error stream, new data reference."""
        watch = self.watches.get(model)
        if watch is None:
            return []
        self.touched.add(model)
        if sequence is not None:
            watch.decision_sequence = max(watch.decision_sequence, sequence)
        if watch.concept.version == version:
            return []
        watch.concept.reset(version)
        watch.data.set_reference(reference)
        watch.live.set_reference(reference)
        watch.expected_error = expected_error(watch.spec.task, metrics)
        return []

    def on_lifecycle(self, event: ModelLifecycleChanged) -> list[Action]:
        """A registry decision (its signature already checked at the edge)."""
        watch = self.watches.get(event.model)
        if watch is None:
            return []
        self.touched.add(event.model)
        if event.sequence is not None:
            if event.sequence <= watch.decision_sequence:
                logger.info("decision #%d about %s is not newer than #%d; ignored",
                            event.sequence, event.model, watch.decision_sequence)
                return []
            watch.decision_sequence = event.sequence
        if (event.action in (LifecycleAction.PROMOTED, LifecycleAction.REJECTED)
                and event.request_id is not None and event.request_id == watch.retrain_in_flight):
            watch.retrain_in_flight = None
            firing = watch.incident()
            if firing is not None:
                firing.previous = {"request_id": event.request_id,
                                   "outcome": event.action.value}
        if (event.action in (LifecycleAction.PROMOTED, LifecycleAction.ROLLED_BACK)
                and event.champion_version == event.version):
            return self.on_champion(event.model, event.version, event.reference_profile,
                                    event.metrics, event.sequence)
        return []

    def on_prediction(self, event: PredictionMade) -> list[Action]:
        """Raises `InvalidInput` naming the field for a number no float holds (NaN, ±inf,
        a 400-digit integer): anyone who can write the topic can send one, and it must be
        refused alone, before it touches any state."""
        watch = self.watches.get(event.model)
        if watch is None:
            return []
        _check_numbers(event)
        self.touched.add(watch.name)
        watch.predicted += 1
        incident = watch.incident()
        if incident is not None and not incident.swapped and event.version > incident.version:
            seconds, samples = incident.swap(event.version, self.clock(), watch.predicted - 1)
            SWAP_LATENCY_SECONDS.labels(watch.name).set(seconds)
            SWAP_LATENCY_SAMPLES.labels(watch.name).set(samples)
            logger.info("%s: v%d answers %.1fs and %d predictions after the alarm",
                        watch.name, event.version, seconds, samples)
        watch.live.predicted(event.version, event.at, event.prediction, event.latency_seconds,
                             event.features)
        actions: list[Action] = self._expired_feedback()
        shifts = watch.data.update(event.features, watch.data_firing)
        if shifts:
            actions += self._data_drift(watch, shifts)
        made = Predicted(watch.name, event.version, event.prediction,
                         compact_json(event.features), event.at)
        label = self.join.prediction(event.prediction_id, made)
        if label is not None:
            actions += self._joined(watch, event.prediction_id, made, label)
        return actions

    def on_label(self, record: RecordValidated) -> list[Action]:
        """A whole labeled record that names its prediction. One completed from feedback
        was scored when the feedback met its prediction: not again."""
        if record.prediction_id is None or record.record_id == feedback_record_id(
                record.prediction_id):
            return []
        label = LabeledPair(record.label, record.ingested_at)
        return self._label(record.prediction_id, label)

    def on_feedback(self, event: Feedback) -> list[Action]:
        """A label known by its prediction id: alone (then completed into a record for the
        dataset), or forwarded by ingestion from a whole record already `stored`."""
        return self._label(event.prediction_id,
                           LabeledPair(event.label, event.at, None if event.stored else event))

    def _label(self, prediction_id: str, label: LabeledPair) -> list[Action]:
        prediction = self.join.label(prediction_id, label)
        actions = self._expired_feedback()
        if prediction is not None and prediction.model in self.watches:
            actions += self._joined(self.watches[prediction.model], prediction_id, prediction,
                                    label)
        return actions

    def _expired_feedback(self) -> list[Action]:
        """Dead letters of feedback that waited out the ttl: looked for at every prediction
        and label, so an orphan is reported soon after its ttl while traffic flows."""
        letters: list[Action] = [_expired(feedback, why)
                                 for feedback, why in self.join.expired_feedback()]
        if letters:
            FEEDBACK_DEAD_LETTERED.inc(len(letters))
        return letters

    def _joined(self, watch: ModelWatch, prediction_id: str, prediction: Predicted,
                label: LabeledPair) -> list[Action]:
        """Score the pair; feedback that came alone also becomes a whole record for the
        dataset (ingestion validates it like any other: a label of the wrong type is
        dead-lettered there with its reason, and scores nothing here)."""
        actions: list[Action] = []
        problems: list[tuple[str, str]] = []  # a whole record's label was checked by ingestion
        if label.feedback is not None:
            FEEDBACK_JOINED.inc()
            check_value("label", label.label, self.project.datasets[watch.spec.dataset].label,
                        problems)
            actions.append(LabeledRecord(
                dataset=watch.spec.dataset, record_id=feedback_record_id(prediction_id),
                features=prediction.features, label=label.label,
                event_time=prediction.at, prediction_id=prediction_id))
        if not problems:
            actions += self._labeled(watch, prediction, label)
        return actions

    # -- decisions ------------------------------------------------------------------------

    def _labeled(self, watch: ModelWatch, prediction: Predicted,
                 label: LabeledPair) -> list[Action]:
        self.touched.add(watch.name)
        watch.labeled += 1
        error = error_of(watch.spec.task, prediction.prediction, label.label)
        if error is None:
            return []
        watch.live.labeled(prediction.version, prediction.at, error)
        incident = watch.incident()
        if incident is not None and prediction.version > incident.version:
            incident.after.append(error)
        if prediction.version != watch.concept.version:
            return []
        signal = watch.concept.update(error, label.ingested_at)
        actions: list[Action] = []
        if signal is not None:
            actions += self._concept_drift(watch, signal)
        elif self._retrain_due(watch):
            actions += self._request_retrain(watch)
        actions += self._maybe_resolve(watch)
        return actions

    def _retrain_due(self, watch: ModelWatch) -> bool:
        """While the alert fires for the serving version and its error stays high, the retrain
        decision is taken again (a detector does not fire twice on a stationary high error,
        and a request refused by the cooldown or a rejected candidate must not end the loop)."""
        firing, policy = watch.incident(), watch.spec.policy
        return (firing is not None and firing.drift is not None
                and firing.drift.version == watch.concept.version
                and watch.retrain_in_flight is None and policy.retrain_on_drift
                and watch.cooled_down(self.clock()) and watch.concept.still_high())

    def _concept_drift(self, watch: ModelWatch, signal: DriftSignal) -> list[Action]:
        """One alert per distinct drift. A signal of the version that drifted (or an older
        one) belongs to the firing alert; a newer version's detector firing is a new drift:
        the old alert is resolved as superseded and a new one fires."""
        actions: list[Action] = []
        firing = watch.incident()
        if firing is not None and signal.version <= firing.version:
            return self._request_retrain(watch)
        raised = concept_drift_alert(watch.name, signal, watch.concept.measure,
                                     watch.spec.monitor)
        if firing is not None:
            actions.append(self._remember(firing.resolve(
                f"{watch.name}: superseded by a new drift of v{signal.version} "
                f"(alert {raised.alert_id})", superseded_by=raised.alert_id,
                **self._after(watch, firing))))
        watch.firing["concept_drift"] = DriftIncident(
            raised, drift=signal, after=deque(maxlen=watch.spec.monitor.recovery_samples),
            fired_at=self.clock(), predicted_at_fire=watch.predicted)
        actions.append(self._remember(raised))
        return actions + self._request_retrain(watch)

    def _request_retrain(self, watch: ModelWatch) -> list[Action]:
        """A drift retrain for the firing alert, unless one is in flight or the cooldown has
        not passed. Each further try for the same drift (the last candidate was rejected, or
        had no decision) takes a window as many times larger as tries were made, from the
        same change point, says in its evidence what happened to the previous one, and
        re-publishes the alert with the same news: on-call sees what the loop did."""
        policy = watch.spec.policy
        firing = watch.incident()
        signal = None if firing is None else firing.drift
        if firing is None or signal is None:
            return []
        now = self.clock()
        if (watch.retrain_in_flight is not None
                and now - watch.last_retrain_at > policy.retrain_timeout_seconds):
            logger.warning("retrain %s of %s had no decision after %.0fs; presumed lost",
                           watch.retrain_in_flight, watch.name, policy.retrain_timeout_seconds)
            firing.previous = {"request_id": watch.retrain_in_flight, "outcome": "no decision"}
            watch.retrain_in_flight = None
        if (not policy.retrain_on_drift or watch.retrain_in_flight is not None
                or not watch.cooled_down(now)):
            return []
        firing.attempts += 1
        evidence: dict[str, Any] = {
            "alert_id": firing.alert.alert_id, "version": signal.version,
            "baseline_error": signal.baseline_error,
            "recent_error": watch.concept.recent_error, "attempt": firing.attempts}
        if firing.previous is not None:
            evidence["previous"] = firing.previous
        request = TrainingRequested(
            request_id=f"drift-{uuid.uuid4().hex[:12]}", model=watch.name,
            reason=TrainingReason.DRIFT,
            window=DataWindow(since=signal.since,
                              last=policy.retrain_max_records * firing.attempts,
                              min_records=policy.retrain_min_records),
            evidence=evidence, requested_by="monitoring")
        watch.retrain_in_flight = request.request_id
        watch.last_retrain_at, watch.last_retrain_labeled = now, watch.labeled
        if firing.attempts == 1:
            return [request]
        logger.warning("%s: retrain attempt %d for alert %s (previous: %s), window of up "
                       "to %d records", watch.name, firing.attempts, firing.alert.alert_id,
                       firing.previous, request.window.last)
        update = firing.revise(attempts=firing.attempts, last_request_id=request.request_id,
                               previous=firing.previous, error_now=evidence["recent_error"])
        return [request, self._remember(update)]

    def _maybe_resolve(self, watch: ModelWatch) -> list[Action]:
        """The alert resolves when the model is back to what its own holdout promised: the
        newer versions' errors over `recovery_samples` are within the tolerance of the
        serving version's holdout error (of the pre-drift baseline when it has none)."""
        firing = watch.incident()
        if firing is None or firing.drift is None:
            return []
        error = firing.recovered_error()
        expected = (watch.expected_error if watch.expected_error is not None
                    else firing.drift.baseline_error)
        if error is None or error > watch.concept.ceiling(expected):
            return []
        del watch.firing["concept_drift"]
        resolved = firing.resolve(
            f"{watch.name} v{watch.concept.version} {measure_words(watch.concept.measure)} "
            f"{error:.2f}, as its holdout promised ({expected:.2f}; "
            f"{firing.drift.recent_error:.2f} when the alert fired)",
            resolved_by_version=watch.concept.version, expected_error=expected,
            **self._after(watch, firing))
        return [self._remember(resolved)]

    @staticmethod
    def _after(watch: ModelWatch, firing: DriftIncident) -> dict[str, Any]:
        """What the newer versions did, for the alert's last word."""
        error = (sum(firing.after) / len(firing.after)) if firing.after else None
        return {"error_after": error, "samples_after": len(firing.after),
                "attempts": firing.attempts}

    def _data_drift(self, watch: ModelWatch, shifts: list[FeatureShift]) -> list[Action]:
        actions: list[Action] = []
        for shift in shifts:
            key = f"data_drift:{shift.feature}"
            firing = watch.firing.get(key)
            if firing is None and shift.drifted:
                raised = data_drift_alert(watch.name, shift, watch.concept.version,
                                          watch.spec.monitor)
                watch.firing[key] = FiringAlert(raised)
                watch.data_firing.add(shift.feature)
                actions.append(self._remember(raised))
            elif firing is not None and not shift.drifted:
                del watch.firing[key]
                watch.data_firing.discard(shift.feature)
                actions.append(self._remember(firing.resolve(
                    f"input {shift.feature!r} of {watch.name} is back to its training "
                    f"distribution (PSI {shift.psi:.2f} over its last {shift.samples} values)",
                    psi_now=shift.psi)))
        return actions

    def _remember(self, alert: AlertRaised) -> AlertRaised:
        self.alerted.add(alert.model)
        self.alerts.append(alert)
        del self.alerts[:-1000]
        logger.warning("alert %s %s: %s", alert.status.value, alert.kind, alert.summary,
                       extra={"alert_id": alert.alert_id})
        return alert


_FLOAT_MAX = sys.float_info.max


def _plainly_finite(values: Iterable[object]) -> bool:
    """Every number a finite float could hold (the common case, checked without building a
    path for each value)."""
    for value in values:
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):  # type: ignore[arg-type]
                return False
        elif kind is int and not -_FLOAT_MAX <= value <= _FLOAT_MAX:  # type: ignore[operator]
            return False
    return True


def _check_numbers(event: PredictionMade) -> None:
    if (_plainly_finite(event.features.values()) and _plainly_finite((event.prediction,))
            and _plainly_finite((event.probabilities or {}).values())):
        return
    problems: list[tuple[str, str]] = []
    numbers: list[tuple[str, object]] = [(f"features.{name}", value)
                                         for name, value in event.features.items()]
    numbers.append(("prediction", event.prediction))
    numbers += [(f"probabilities.{name}", p) for name, p in (event.probabilities or {}).items()]
    for path, value in numbers:
        if isinstance(value, int | float) and not isinstance(value, bool):
            check_number(path[:200], value, problems)
    if problems:
        raise InvalidInput(detail=f"prediction {event.prediction_id[:100]!r}: "
                                  f"{describe(problems)}", errors=problems)


def _expired(feedback: Feedback, why: str) -> RecordRejected:
    """The dead letter of feedback whose prediction never came."""
    body = feedback.model_dump_json()
    return RecordRejected(
        source_topic="feedback", partition=-1, offset=-1, key=feedback.prediction_id,
        value_base64=base64.b64encode(body.encode()).decode(), value_text=body,
        reason=f"no prediction {feedback.prediction_id[:80]!r} seen: the feedback {why}",
        rejected_by="monitoring")
