"""The alerts monitoring raises: what on-call reads first, built in one place."""

from __future__ import annotations

import uuid

from contracts.events import AlertRaised, AlertStatus, Severity
from services.monitoring.concept import DriftSignal
from services.monitoring.data_drift import FeatureShift
from shared.project import MonitorSpec


def measure_words(measure: str) -> str:
    return "mean absolute error" if measure == "mae" else "error rate"


def concept_drift_alert(model: str, signal: DriftSignal, measure: str,
                        spec: MonitorSpec) -> AlertRaised:
    return AlertRaised(
        alert_id=f"al-{uuid.uuid4().hex[:12]}", status=AlertStatus.FIRING,
        severity=Severity.CRITICAL, kind="concept_drift", model=model,
        summary=(f"{model} v{signal.version} {measure_words(measure)} rose from "
                 f"{signal.baseline_error:.2f} to {signal.recent_error:.2f}"),
        evidence={"version": signal.version, "baseline_error": signal.baseline_error,
                  "recent_error": signal.recent_error, "samples": signal.samples,
                  "measure": measure, "detector": spec.concept.detector,
                  "change_width": signal.change_width,
                  "drift_since": signal.since.isoformat()},
        runbook=("A retrain on post-drift data was requested; follow models.lifecycle. "
                 "If the candidate is rejected, inspect the data and the registry's "
                 "audit log."))


def data_drift_alert(model: str, shift: FeatureShift, version: int | None,
                     spec: MonitorSpec) -> AlertRaised:
    return AlertRaised(
        alert_id=f"al-{uuid.uuid4().hex[:12]}", status=AlertStatus.FIRING,
        severity=Severity.WARNING, kind="data_drift", model=model,
        summary=(f"input {shift.feature!r} of {model} drifted from its training "
                 f"distribution (PSI {shift.psi:.2f} > {spec.data.psi_threshold:g} over its "
                 f"last {shift.samples} values)"),
        evidence={"feature": shift.feature, "psi": shift.psi,
                  "threshold": spec.data.psi_threshold, "g_statistic": shift.g,
                  "p_value": shift.p_value, "alpha": spec.data.alpha,
                  "window": shift.samples, "version": version},
        runbook=("Inputs changed; the model may still be right. Check upstream data; "
                 "retraining happens only if errors rise."))
