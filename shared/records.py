"""Checking feature values against a dataset's declared contract (ingestion and serving)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.project import DatasetSpec, ValueSpec, ValueType

Problems = list[tuple[str, str]]


def check_value(path: str, value: Any, spec: ValueSpec, problems: Problems) -> Any:
    """The value normalised to its declared type; appends (path, message) when it is wrong."""
    kind = spec.type
    if kind in (ValueType.FLOAT, ValueType.INT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append((path, f"expected a number, got {value!r}"))
            return None
        if value != value or value in (float("inf"), float("-inf")):
            problems.append((path, f"expected a finite number, got {value!r}"))
            return None
        if kind is ValueType.INT:
            if float(value) != int(value):
                problems.append((path, f"expected an integer, got {value!r}"))
                return None
            value = int(value)
        else:
            value = float(value)
        if spec.min is not None and value < spec.min:
            problems.append((path, f"{value!r} is below the allowed minimum {spec.min:g}"))
        if spec.max is not None and value > spec.max:
            problems.append((path, f"{value!r} is above the allowed maximum {spec.max:g}"))
    elif kind is ValueType.BOOL:
        if not isinstance(value, bool):
            problems.append((path, f"expected true or false, got {value!r}"))
            return None
    elif not isinstance(value, str):
        problems.append((path, f"expected a string, got {value!r}"))
        return None
    if spec.categories is not None and value not in spec.categories:
        problems.append((path, f"{value!r} is not one of {spec.categories!r}"))
    return value


def check_features(features: Mapping[str, Any], dataset: DatasetSpec,
                   problems: Problems, prefix: str = "features") -> dict[str, Any]:
    """Declared features, typed; missing and undeclared ones are problems too."""
    clean: dict[str, Any] = {}
    for name, spec in dataset.features.items():
        if name not in features or features[name] is None:
            if spec.required:
                problems.append((f"{prefix}.{name}", "field required"))
            continue
        clean[name] = check_value(f"{prefix}.{name}", features[name], spec, problems)
    for name in features:
        if name not in dataset.features:
            problems.append((f"{prefix}.{name}", "not a feature of this dataset"))
    return clean


def describe(problems: Problems) -> str:
    """One line listing every problem."""
    return "; ".join(f"{field}: {message}" for field, message in problems)
