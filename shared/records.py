"""Checking feature values against a dataset's declared contract (ingestion and serving).

Every problem names its field, and nothing in a message repeats more of the input than a
person needs: a record may carry a 300 KB string or a 400-digit integer, and its reason
must stay small enough to be dead-lettered and read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from shared.project import DatasetSpec, ValueSpec, ValueType

Problems = list[tuple[str, str]]

MAX_SHOWN_CHARS = 80
"""Characters of an offending value repeated in a message."""
MAX_NAME_CHARS = 100
"""Characters of an undeclared feature's name repeated in a field path."""
MAX_DESCRIBED = 20
"""Problems listed in one line by `describe`; the rest are counted."""


def shown(value: Any) -> str:
    """`repr(value)`, bounded (repr of a huge int may not even exist: Python refuses to
    print integers of more than 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        digits = int((value.bit_length() - 1) * math.log10(2))  # a lower bound, off by ≤ 1
        while abs(value) >= 10 ** digits:
            digits += 1
        return f"an integer of {digits:,} digits"
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}… [cut: {len(text) - MAX_SHOWN_CHARS:,} more characters]"


def _name(name: str) -> str:
    if len(name) <= MAX_NAME_CHARS:
        return name
    return f"{name[:MAX_NAME_CHARS]}…"


def _finite(path: str, value: Any, problems: Problems) -> float | None:
    """`value` as a finite float, or None with a problem: NaN, ±inf and integers beyond a
    float's range are bad input, never an OverflowError out of the handler."""
    try:
        number = float(value)
    except OverflowError:
        problems.append((path, f"expected a finite number, got {shown(value)} (too large)"))
        return None
    if not math.isfinite(number):
        problems.append((path, f"expected a finite number, got {shown(value)}"))
        return None
    return number


def check_number(path: str, value: Any, problems: Problems) -> float | None:
    """A JSON number that fits a finite float, else None with a problem naming `path`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append((path, f"expected a number, got {shown(value)}"))
        return None
    return _finite(path, value, problems)


def check_value(path: str, value: Any, spec: ValueSpec, problems: Problems) -> Any:
    """The value normalised to its declared type; appends (path, message) when it is wrong."""
    kind = spec.type
    if kind in (ValueType.FLOAT, ValueType.INT):
        number = check_number(path, value, problems)
        if number is None:
            return None
        if kind is ValueType.INT:
            if isinstance(value, float) and not value.is_integer():
                problems.append((path, f"expected an integer, got {shown(value)}"))
                return None
            value = int(value)
        else:
            value = number
        if spec.min is not None and value < spec.min:
            problems.append((path, f"{shown(value)} is below the allowed minimum {spec.min:g}"))
        if spec.max is not None and value > spec.max:
            problems.append((path, f"{shown(value)} is above the allowed maximum {spec.max:g}"))
    elif kind is ValueType.BOOL:
        if not isinstance(value, bool):
            problems.append((path, f"expected true or false, got {shown(value)}"))
            return None
    elif not isinstance(value, str):
        problems.append((path, f"expected a string, got {shown(value)}"))
        return None
    if spec.categories is not None and value not in spec.categories:
        problems.append((path, f"{shown(value)} is not one of {spec.categories!r}"))
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
            problems.append((f"{prefix}.{_name(name)}", "not a feature of this dataset"))
    return clean


def describe(problems: Problems) -> str:
    """One line listing the first problems and counting the rest."""
    line = "; ".join(f"{field}: {message}" for field, message in problems[:MAX_DESCRIBED])
    if len(problems) > MAX_DESCRIBED:
        line += f"; … [cut: {len(problems) - MAX_DESCRIBED:,} more problems]"
    return line
