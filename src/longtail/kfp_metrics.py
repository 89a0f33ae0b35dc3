"""KFP-facing evaluation outputs as plain values: a flat metrics dict and a size-capped confusion matrix.

Nothing here imports kfp. A component passes these to `Metrics.log_metric(name, value)` for each item
and to `ClassificationMetrics.log_confusion_matrix(c["categories"], c["matrix"])`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from longtail.scoring import ClassificationScores, MacroF1Interval, most_confused_classes

# Artifact metadata is written to ML Metadata over gRPC, whose default message limit is 4 MiB
# (4194304 bytes; kubeflow/pipelines#11949: "Received message larger than max" for big
# ClassificationMetrics). The matrix stays far below that, leaving room for the rest of the call.
KFP_METADATA_BUDGET_BYTES = 256 * 1024
# Beyond this many classes the KFP UI's confusion table is unreadable anyway: keep the most
# confused classes and fold the rest into one OTHER row and column, so every image still counts.
KFP_MAX_CLASSES = 30
OTHER = "(other classes)"


def kfp_scalar_metrics(scores: ClassificationScores, *, min_macro_f1: float, passed: bool,
                       macro_f1_plain: float | None = None,
                       interval: MacroF1Interval | None = None) -> dict[str, float]:
    """Flat {name: float} for KFP's `Metrics` artifact (the KFP run-compare view reads these).

    macro_f1 is under the run's target prior; macro_f1_plain (the split as drawn) and the
    interval's bounds (macro_f1_low, macro_f1_high) are added when given.
    """
    f1s = [c.f1 for c in scores.per_class]
    extra = {} if macro_f1_plain is None else {"macro_f1_plain": float(macro_f1_plain)}
    if interval is not None:
        extra.update(macro_f1_low=interval.low, macro_f1_high=interval.high)
    return {
        "macro_f1": float(scores.macro_f1),
        **extra,
        "weighted_f1": float(scores.weighted_f1),
        "accuracy": float(scores.accuracy),
        "worst_class_f1": float(min(f1s)) if f1s else 0.0,
        "classes_with_zero_f1": float(sum(f == 0.0 for f in f1s)),
        "n_images": float(scores.n),
        "n_classes": float(len(scores.per_class)),
        "min_macro_f1": float(min_macro_f1),
        "gate_passed": 1.0 if passed else 0.0,
    }


def kfp_confusion_matrix(
    confusion: np.ndarray,
    class_names: list[str],
    *,
    max_classes: int = KFP_MAX_CLASSES,
    budget_bytes: int = KFP_METADATA_BUDGET_BYTES,
) -> dict[str, Any]:
    """A confusion matrix for `ClassificationMetrics.log_confusion_matrix`, capped for KFP.

    Up to `max_classes` classes: all of them, in class order. Beyond: the `max_classes - 1` most
    confused classes (errors as truth plus as prediction, then support) and one OTHER category
    holding the sums of the rest, so rows still sum to the class supports. The cap shrinks
    further if the JSON would exceed `budget_bytes` (long class names).

    Returns:
        {"categories": [str], "matrix": [[int]], "n_classes": int, "truncated": bool}
    """
    cm = np.asarray(confusion, dtype=np.int64)
    n = cm.shape[0]
    if cm.shape != (n, n) or n != len(class_names):
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(class_names)} class names")
    if max_classes < 2:
        raise ValueError(f"max_classes must be >= 2, got {max_classes}")
    k = n if n <= max_classes else max_classes - 1
    while True:
        out = _fold(cm, class_names, most_confused_classes(cm, k))
        if len(json.dumps(out)) <= budget_bytes or k <= 1:
            return out
        k = max(1, k // 2)


def _fold(cm: np.ndarray, class_names: list[str], keep: np.ndarray) -> dict[str, Any]:
    n = cm.shape[0]
    rest = np.setdiff1d(np.arange(n), keep)
    categories = [class_names[i] for i in keep]
    if len(rest) == 0:
        matrix = cm[np.ix_(keep, keep)]
    else:
        other = OTHER
        while other in categories:
            other += "*"
        categories.append(other)
        group = np.full(n, len(keep))
        group[keep] = np.arange(len(keep))
        onehot = np.eye(len(keep) + 1, dtype=np.int64)[group]  # class -> its row/column in the folded matrix
        matrix = onehot.T @ cm @ onehot
    return {
        "categories": categories,
        "matrix": matrix.astype(int).tolist(),
        "n_classes": int(n),
        "truncated": bool(len(rest)),
    }
