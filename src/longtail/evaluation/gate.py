"""The submission gate and the warnings beside it: the macro-F1 threshold, overfitting, classes never recognised.

It decides and words its decisions; the caller records them (longtail.post_run).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from longtail.errors import ConfigError
from longtail.model_dir import EvaluationDir
from longtail.scoring import ClassificationScores

log = logging.getLogger(__name__)

# docs/seed-log.md "EXP1": "obviously overfitting, acc reaches 1" while val lagged ten points behind.
OVERFIT_TRAIN_ACCURACY = 0.98
OVERFIT_GAP = 0.10


def gate(macro_f1: float, min_macro_f1: float) -> tuple[bool, str]:
    """The submission gate: passed when macro_f1 >= min_macro_f1, with the reason in words."""
    if not 0.0 <= min_macro_f1 <= 1.0:
        raise ConfigError(f"evaluate.min_macro_f1 must be in [0, 1], got {min_macro_f1}")
    if min_macro_f1 == 0.0:
        return True, f"no gate set (evaluate.min_macro_f1 = 0); macro-F1 is {macro_f1:.4f}"
    if macro_f1 >= min_macro_f1:
        return True, f"macro-F1 {macro_f1:.4f} >= evaluate.min_macro_f1 {min_macro_f1:.4f}"
    return False, (
        f"macro-F1 {macro_f1:.4f} < evaluate.min_macro_f1 {min_macro_f1:.4f} "
        f"(short by {min_macro_f1 - macro_f1:.4f}); the pipeline skips submission"
    )


def overfitting_warning(history: dict[str, list[float]], macro_f1: float) -> str | None:
    """A warning when train accuracy reached ~1 while val macro-F1 lags well behind (docs/seed-log.md "EXP1")."""
    acc = history.get("accuracy") or []
    if not acc:
        return None
    final = float(acc[-1])
    gap = final - macro_f1
    if final >= OVERFIT_TRAIN_ACCURACY and gap > OVERFIT_GAP:
        return (
            f"possible overfitting: final train accuracy {final:.3f} while val macro-F1 is {macro_f1:.3f} "
            f"(gap {gap:.2f} > {OVERFIT_GAP:.2f}), like the log's EXP1 'acc reaches 1'. Try stronger "
            "augmentation, weight decay, label smoothing or fewer epochs"
        )
    return None


def class_warnings(
    scores: ClassificationScores, class_names: list[str], support: np.ndarray, history: dict[str, list[float]]
) -> list[str]:
    """What a person should know beside the macro-F1: overfitting, classes never recognised, classes absent."""
    warnings = []
    overfit = overfitting_warning(history, scores.macro_f1)
    if overfit:
        warnings.append(overfit)
    zero = [c.name for c in scores.per_class if c.f1 == 0.0 and c.support > 0]
    if zero:
        warnings.append(
            f"{len(zero)} classes have F1 = 0 (no image of theirs recognised): {', '.join(zero[:10])}"
            + (f" and {len(zero) - 10} more" if len(zero) > 10 else "")
            + "; class weights (effective-number) usually help the tail"
        )
    absent = [class_names[i] for i in np.flatnonzero(support == 0)]
    if absent:
        warnings.append(
            f"{len(absent)} classes have no images in this split and are left out of the averages: "
            + ", ".join(absent[:10])
        )
    return warnings


def closed_gate_reason(evaluation_dir: str | Path) -> str:
    """Why the gate closed, as evaluate worded it in the evaluation folder (e.g. "macro-F1 0.4120 < gate 0.9000").

    The caller records it (longtail.post_run.record_gate_closed); nothing here writes to MLflow.
    """
    return EvaluationDir(evaluation_dir).load_metrics().get("reason", "the evaluation gate failed")
