"""Whether a candidate beats a baseline on the same holdout: the promotion comparison.

The registry gates candidates with it, and training's progressive challengers stop climbing
with it; one function, so the two never disagree about what "better" means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.project import PolicySpec

LOWER_IS_BETTER = frozenset({"mae", "mse", "rmse", "log_loss", "error_rate"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The comparison's answer, and why (the registry's decision reason)."""

    better: bool
    reason: str


def compare(policy: PolicySpec, candidate: Mapping[str, float], baseline: Mapping[str, float],
            baseline_name: str) -> Verdict:
    """Better only when `candidate` beats `baseline` on the policy's metric by at least its
    `promotion_margin`, and strictly: a tie keeps the baseline (the champion)."""
    metric = policy.metric  # the project decides what counts, not the event
    if metric not in candidate or metric not in baseline:
        return Verdict(False, f"metric {metric!r} missing from the evaluation")
    new, old = candidate[metric], baseline[metric]
    margin = policy.promotion_margin
    gain = old - new if metric in LOWER_IS_BETTER else new - old
    comparison = (f"{metric} {new:.4f} vs {baseline_name} {old:.4f} on the same holdout "
                  f"(margin {margin:g})")
    if gain > 0 and gain >= margin:
        return Verdict(True, f"{comparison}: better")
    return Verdict(False, f"{comparison}: not better by the margin")
