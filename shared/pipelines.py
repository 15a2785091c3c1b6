"""River pipelines built from a declarative spec, only from allowlisted classes.

A project file names estimators as "module.Class" strings; only the classes
below can be built, with JSON-scalar parameters, so a project file can never
import or call arbitrary code.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from river import (
    drift,
    forest,
    linear_model,
    naive_bayes,
    neighbors,
    optim,
    preprocessing,
    tree,
)

ESTIMATORS: Mapping[str, type[Any]] = {
    "preprocessing.StandardScaler": preprocessing.StandardScaler,
    "preprocessing.MinMaxScaler": preprocessing.MinMaxScaler,
    "preprocessing.OneHotEncoder": preprocessing.OneHotEncoder,
    "linear_model.LogisticRegression": linear_model.LogisticRegression,
    "linear_model.LinearRegression": linear_model.LinearRegression,
    "linear_model.PAClassifier": linear_model.PAClassifier,
    "naive_bayes.GaussianNB": naive_bayes.GaussianNB,
    "tree.HoeffdingTreeClassifier": tree.HoeffdingTreeClassifier,
    "tree.HoeffdingAdaptiveTreeClassifier": tree.HoeffdingAdaptiveTreeClassifier,
    "tree.ExtremelyFastDecisionTreeClassifier": tree.ExtremelyFastDecisionTreeClassifier,
    "tree.HoeffdingTreeRegressor": tree.HoeffdingTreeRegressor,
    "tree.HoeffdingAdaptiveTreeRegressor": tree.HoeffdingAdaptiveTreeRegressor,
    "forest.ARFClassifier": forest.ARFClassifier,
    "forest.ARFRegressor": forest.ARFRegressor,
    "forest.AMFClassifier": forest.AMFClassifier,
    "forest.AMFRegressor": forest.AMFRegressor,
    "forest.OXTRegressor": forest.OXTRegressor,
    "neighbors.KNNClassifier": neighbors.KNNClassifier,
}
"""Estimators a pipeline step may name. The adaptive ones (ARF, Hoeffding adaptive trees,
Mondrian forests, online extra trees) suit online learners: each is built from scalar
parameters and a seed, with no nested model to declare."""

OPTIMIZERS: Mapping[str, type[Any]] = {"optim.SGD": optim.SGD, "optim.Adam": optim.Adam}
"""Optimisers a linear model's `optimizer` parameter may name (with a `lr`)."""

DETECTORS: Mapping[str, type[Any]] = {
    "ADWIN": drift.ADWIN,
    "PageHinkley": drift.PageHinkley,
    "KSWIN": drift.KSWIN,
    "DDM": drift.binary.DDM,
    "EDDM": drift.binary.EDDM,
    "HDDM_A": drift.binary.HDDMA,
    "HDDM_W": drift.binary.HDDMW,
}
"""Drift detectors a monitor may name."""

Scalar = bool | int | float | str | None


def _check_params(where: str, params: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name, value in params.items():
        if name == "optimizer" and isinstance(value, Mapping):
            kind = str(value.get("name"))
            if kind not in OPTIMIZERS:
                raise ValueError(f"{where}: optimizer {kind!r} is not allowed "
                                 f"(allowed: {', '.join(OPTIMIZERS)})")
            checked[name] = OPTIMIZERS[kind](lr=float(value.get("lr", 0.01)))
        elif isinstance(value, bool | int | float | str) or value is None:
            checked[name] = value
        else:
            raise ValueError(f"{where}: parameter {name!r} must be a number, string or boolean")
    return checked


def validate_step(step: Mapping[str, Any]) -> None:
    """Raise ValueError unless the step names an allowlisted estimator with scalar params."""
    name = step.get("estimator")
    if name not in ESTIMATORS:
        raise ValueError(f"estimator {name!r} is not allowed (allowed: {', '.join(ESTIMATORS)})")
    _check_params(str(name), step.get("params", {}))


def build_pipeline(steps: Sequence[Mapping[str, Any]], seed: int | None = None) -> Any:
    """A fresh River estimator or pipeline from its spec; `seed` goes to every step that
    takes one and does not set its own, so a run is reproducible from its lineage."""
    if not steps:
        raise ValueError("a pipeline needs at least one step")
    built = []
    for step in steps:
        validate_step(step)
        name = str(step["estimator"])
        params = _check_params(name, step.get("params", {}))
        if seed is not None and "seed" not in params and \
                "seed" in inspect.signature(ESTIMATORS[name]).parameters:
            params["seed"] = seed
        built.append(ESTIMATORS[name](**params))
    return functools.reduce(operator.or_, built) if len(built) > 1 else built[0]


def build_detector(name: str, params: Mapping[str, Any]) -> Any:
    """A fresh River drift detector from the allowlist."""
    if name not in DETECTORS:
        raise ValueError(f"detector {name!r} is not allowed (allowed: {', '.join(DETECTORS)})")
    return DETECTORS[name](**_check_params(name, params))
