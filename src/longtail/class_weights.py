"""Per-class loss weights from the train split's class counts: none, inverse frequency, effective number."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from longtail.errors import DataError
from longtail.splits import read_info
from longtail.storage import write_bytes

# The schemes `weights.scheme` may name (the config's type, the CLI's choices).
WeightScheme = Literal["none", "inverse-frequency", "effective-number"]
SCHEMES: tuple[str, ...] = get_args(WeightScheme)
# The effective-number beta's range: the one rule for `weights.beta` and `longtail weights --beta`
# (beta 0 would weigh every class as one sample; 1 divides by zero).
BETA_RULE = "> 0 and < 1"


def beta_in_range(beta: float) -> bool:
    """Whether `beta` satisfies BETA_RULE."""
    return 0.0 < beta < 1.0


def inverse_frequency_weights(counts: Sequence[int]) -> list[float]:
    """max(count) / count: the largest class weighs 1.0 (docs/seed-log.md "EXP3": "(min, max) = (1.0, 678.3)")."""
    largest = max(counts)
    return [largest / n for n in counts]


def effective_number_weights(counts: Sequence[int], beta: float) -> list[float]:
    """Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples":
    w_c proportional to (1 - beta) / (1 - beta^n_c), normalised so the weights sum to the number of classes.
    """
    raw = [(1.0 - beta) / (1.0 - beta**n) for n in counts]
    total = sum(raw)
    return [w * len(counts) / total for w in raw]


def class_weights(counts: Sequence[int], scheme: str, beta: float) -> list[float]:
    """Weights by class index.

    Args:
        counts: training samples per class index.
        scheme: "none" (all 1.0), "inverse-frequency" or "effective-number".
        beta: the effective-number hyper-parameter (weights.beta), > 0 and < 1.

    Raises:
        DataError: unknown scheme, beta out of range, or a class without samples.
    """
    if scheme not in SCHEMES:
        raise DataError(f"unknown class-weight scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not counts:
        raise DataError("cannot compute class weights: no classes")
    if scheme == "none":
        return [1.0] * len(counts)
    empty = [i for i, n in enumerate(counts) if n <= 0]
    if empty:
        raise DataError(
            f"cannot compute {scheme} weights: class index {empty[0]} has no training samples "
            "(re-ingest with --min-per-class 1 or more)"
        )
    if scheme == "inverse-frequency":
        return inverse_frequency_weights(counts)
    if not beta_in_range(beta):
        raise DataError(f"weights.beta must be {BETA_RULE}, got {beta!r}")
    return effective_number_weights(counts, beta)


def write_weights(train_h5: str | Path, out_json: str | Path, scheme: str, beta: float) -> dict[str, Any]:
    """Compute class weights from a train split's labels and write them as JSON (atomically).

    Prints "class weights (min, max) = (1.0, 51.73684210526316)" as the seed log does (docs/seed-log.md "EXP2").

    Returns:
        What was written: scheme, beta, class_names, counts, weights (by class index), min, max.
    """
    info = read_info(train_h5)
    if not info.has_labels:
        raise DataError(f"{train_h5} has no labels: class weights need the train split, not a test split")
    counts = info.class_counts()
    weights = class_weights(counts, scheme, beta)
    result = {
        "scheme": scheme,
        "beta": float(beta),
        "class_names": info.class_names,
        "counts": counts,
        "weights": weights,
        "min": min(weights),
        "max": max(weights),
    }
    write_bytes(str(out_json), json.dumps(result, indent=2).encode())
    print(f"class weights (min, max) = ({result['min']}, {result['max']})")
    return result
