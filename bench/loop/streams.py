"""The benchmark's streams: River's seeded synthetic generators, materialised once so the
platform and the in-process baselines see exactly the same samples.

Drifts sit at 1/3 and 2/3 of the run (10k and 20k of 30k). An abrupt concept drift switches
to a generator of another classification function (River's ConceptDriftStream cannot: its
sigmoid overflows `math.exp` for a narrow width thousands of samples before the drift).
Feature names are strings ("x0".."x9" where River uses integer keys) because JSON objects
have string keys; labels of classifiers are ints (SEA yields bools). Features that are
integers in every sample are declared "int", the rest "float" and coerced to float, so what
is served is what is declared.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from river.datasets import synth

COVARIATE_FACTOR = 1.5
"""Salary multiplier after the covariate shift."""

Features = dict[str, float | int]
Sample = tuple[Features, float | int]


@dataclass(frozen=True)
class Stream:
    """One materialised stream and what the benchmark must know about it."""

    name: str
    task: str
    """"classification" or "regression"."""
    samples: list[Sample]
    features: dict[str, str]
    """Feature name to declared type ("int" or "float")."""
    drifts: tuple[int, ...]
    """Sample indices where the stream changes (empty: a gradual, continuous drift)."""
    concept_drift: bool
    """False when only the input distribution changes (the labelling function does not)."""
    about: str


def _drifting(generators: Iterable[Any], drifts: tuple[int, int]) -> Iterator[Any]:
    """The first generator until drifts[0], the second until drifts[1], then the third."""
    first, second, third = generators
    yield from itertools.islice(first, drifts[0])
    yield from itertools.islice(second, drifts[1] - drifts[0])
    yield from third


def _covariate_agrawal(function: int, seed: int, shift_at: int) -> Iterator[tuple[Any, int]]:
    """Agrawal with classification function `function`; from sample `shift_at` on, salary is
    multiplied by COVARIATE_FACTOR and the label is recomputed by the same function from the
    shifted record. P(y | x) never changes: only the input distribution does (a concept
    drift would keep the old label for the new salary)."""
    label_of = getattr(synth.Agrawal, f"_classification_function_{function}")  # river 0.26
    for index, (x, y) in enumerate(synth.Agrawal(classification_function=function, seed=seed)):
        if index >= shift_at:
            x = {**x, "salary": x["salary"] * COVARIATE_FACTOR}
            y = label_of(**x)
        yield x, y


def _classifier_sources(seed: int, drifts: tuple[int, int]) -> dict[str, tuple[Any, str]]:
    return {
        "agrawal": (_drifting((synth.Agrawal(classification_function=f, seed=seed + i)
                                for i, f in enumerate((0, 2, 5))), drifts),
                    "Agrawal, classification function 0 → 2 → 5"),
        "sea": (_drifting((synth.SEA(variant=v, noise=0.1, seed=seed + i)
                            for i, v in enumerate((0, 2, 3))), drifts),
                "SEA, variant 0 → 2 → 3, 10% label noise"),
        "sine": (_drifting((synth.Sine(classification_function=f, seed=seed + i)
                             for i, f in enumerate((0, 1, 2))), drifts),
                 "Sine, function 0 → 1 (labels flipped) → 2"),
        "hyperplane": (synth.Hyperplane(seed=seed, n_features=10, n_drift_features=2,
                                        mag_change=0.001, noise_percentage=0.05, sigma=0.1),
                       "rotating hyperplane, 10 features, 2 rotating (mag_change 0.001), "
                       "5% noise: a gradual drift all along"),
        "covariate-agrawal0": (_covariate_agrawal(0, seed, drifts[0]),
                               f"Agrawal function 0, salary × {COVARIATE_FACTOR} from the first "
                               "drift point on, labels by the same function (input shift only)"),
        "covariate-agrawal1": (_covariate_agrawal(1, seed, drifts[0]),
                               f"Agrawal function 1, salary × {COVARIATE_FACTOR} from the first "
                               "drift point on, labels by the same function (input shift only)"),
    }


STREAMS = ("agrawal", "sea", "sine", "hyperplane", "covariate-agrawal0", "covariate-agrawal1",
           "friedman")
"""Every stream, in the order the benchmark runs them."""


def build(name: str, samples: int, seed: int) -> Stream:
    """Stream `name` of `samples` samples, drifts at 1/3 and 2/3."""
    drifts = (samples // 3, 2 * samples // 3)
    if name == "friedman":
        source: Iterable[tuple[Any, Any]] = synth.FriedmanDrift(
            drift_type="gra", position=drifts, seed=seed)
        return _materialise(name, "regression", source, samples, drifts, True,
                            "Friedman #1 regression, global recurring abrupt drift (the "
                            "relevant features swap at 1/3 and swap back at 2/3)")
    sources = _classifier_sources(seed, drifts)
    if name not in sources:
        raise ValueError(f"unknown stream {name!r} (known: {', '.join(STREAMS)})")
    source, about = sources[name]
    if name == "hyperplane":
        return _materialise(name, "classification", source, samples, (), True, about)
    if name.startswith("covariate-"):
        return _materialise(name, "classification", source, samples, drifts[:1], False, about)
    return _materialise(name, "classification", source, samples, drifts, True, about)


def _materialise(name: str, task: str, source: Iterable[tuple[Any, Any]], samples: int,
                 drifts: tuple[int, ...], concept_drift: bool, about: str) -> Stream:
    raw = [({f"x{k}" if isinstance(k, int) else str(k): v for k, v in x.items()}, y)
           for x, y in itertools.islice(source, samples)]
    types = {key: "int" if all(_is_int(x[key]) for x, _ in raw) else "float" for key in raw[0][0]}
    cast: Callable[[Any], float | int] = int if task == "classification" else float
    rows: list[Sample] = [({k: int(v) if types[k] == "int" else float(v) for k, v in x.items()},
                           cast(y)) for x, y in raw]
    return Stream(name=name, task=task, samples=rows, features=types, drifts=drifts,
                  concept_drift=concept_drift, about=about)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
