"""Macro-F1 scoring: of predictions, of a submission CSV against held-out labels, and of the leaderboard."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longtail.errors import DataError
from longtail.submission import examples, read_submission
from longtail.tracking.names import TEST_MACRO_F1

# Digits in the classification_report table (the log pastes 2; LB differences are in the third digit).
REPORT_DIGITS = 4


@dataclass
class ClassMetrics:
    """One row of the classification report."""

    index: int
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassificationScores:
    """sklearn's view of one set of predictions: the headline numbers, the table, the confusion matrix.

    Averages run over the classes that occur in the truth or the predictions (sklearn's default, and
    so `f1_score(y_true, y_pred, average="macro")` exactly); `confusion` is over every class index.
    """

    macro_f1: float
    weighted_f1: float
    accuracy: float
    n: int
    per_class: list[ClassMetrics]
    report_text: str
    confusion: np.ndarray = field(repr=False)


def classification_scores(y_true: Any, y_pred: Any, class_names: list[str]) -> ClassificationScores:
    """Macro/weighted F1, accuracy, per-class precision/recall/F1/support and the report table.

    Args:
        y_true, y_pred: integer class indices into `class_names`.
    """
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise DataError(f"{len(y_true)} true labels for {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise DataError("nothing to score: no labelled rows")
    n_classes = len(class_names)
    top = int(max(y_true.max(), y_pred.max()))
    if top >= n_classes or min(y_true.min(), y_pred.min()) < 0:
        raise DataError(f"class index {top} is outside the {n_classes} class names")
    labels = np.unique(np.concatenate([y_true, y_pred]))
    names = [class_names[i] for i in labels]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = [
        ClassMetrics(int(i), class_names[i], float(pi), float(ri), float(fi), int(si))
        for i, pi, ri, fi, si in zip(labels, p, r, f, s, strict=True)
    ]
    return ClassificationScores(
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        weighted_f1=float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        n=int(len(y_true)),
        per_class=per_class,
        report_text=classification_report(
            y_true, y_pred, labels=labels, target_names=names, digits=REPORT_DIGITS, zero_division=0
        ),
        confusion=confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)),
    )


def score(
    submission_csv: str | Path,
    labels_csv: str | Path,
    *,
    id_column: str = "id",
    label_column: str = "label",
    class_names: list[str] | None = None,
) -> ClassificationScores:
    """Score a submission CSV against held-out labels, as the leaderboard does (macro-F1), with sklearn's report.

    Ids are compared without folders and image extensions on both sides, so "test/00042.png" in
    one file matches "00042" in the other.

    Args:
        class_names: the label vocabulary; defaults to the labels that occur in `labels_csv`.
            A submission label outside it is an error (a typo or a model from another dataset).

    Raises:
        DataError: missing, duplicate or unknown ids; unknown labels; a missing column; an empty file.
    """
    truth = read_submission(labels_csv, id_column=id_column, label_column=label_column, what="labels")
    sub = read_submission(submission_csv, id_column=id_column, label_column=label_column, what="submission")
    missing = set(truth) - set(sub)
    if missing:
        raise DataError(
            f"submission {submission_csv} is missing {len(missing)} of {len(truth)} ids in {labels_csv}, "
            f"e.g. {examples(missing)}: predict every test image"
        )
    unknown_ids = set(sub) - set(truth)
    if unknown_ids:
        raise DataError(
            f"submission {submission_csv} has {len(unknown_ids)} ids that are not in {labels_csv}, "
            f"e.g. {examples(unknown_ids)}: is it a submission for this test set?"
        )
    vocabulary = list(class_names) if class_names is not None else sorted(set(truth.values()))
    index = {name: i for i, name in enumerate(vocabulary)}
    unknown_truth = {v for v in truth.values() if v not in index}
    if unknown_truth:
        raise DataError(f"labels {labels_csv} use {len(unknown_truth)} labels outside the class names, e.g. {examples(unknown_truth)}")
    bad = {i: v for i, v in sub.items() if v not in index}
    if bad:
        first = sorted(bad)[:3]
        raise DataError(
            f"submission {submission_csv} has {len(bad)} rows with labels that are not class names, e.g. "
            + ", ".join(f"{bad[i]!r} (id {i})" for i in first)
            + f"; known labels: {examples(set(vocabulary))}"
        )
    ids = sorted(truth)
    return classification_scores([index[truth[i]] for i in ids], [index[sub[i]] for i in ids], vocabulary)


def score_into_run(submission_csv: str | Path, labels_csv: str | Path, *, tracking_uri: str, run_id: str,
                   metric: str = TEST_MACRO_F1) -> ClassificationScores:
    """Score a submission against held-out labels and log its macro-F1 on an MLflow run as `metric`."""
    from longtail.tracking.model_runs import log_test_score

    result = score(submission_csv, labels_csv)
    log_test_score(tracking_uri, run_id, result.macro_f1, metric)
    return result


def most_confused_classes(confusion: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the k classes most involved in errors, as truth or as prediction.

    Ranked by misclassified images in their row plus their column, then by support, then index,
    so the choice is deterministic; used to cut a 200-class matrix down to what a person can read.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    n = cm.shape[0]
    if k >= n:
        return np.arange(n)
    off = cm - np.diag(np.diag(cm))
    errors = off.sum(axis=1) + off.sum(axis=0)
    support = cm.sum(axis=1)
    order = np.lexsort((np.arange(n), -support, -errors))
    return np.sort(order[:k])


def top_confusions(confusion: np.ndarray, class_names: list[str], k: int = 10) -> list[dict[str, Any]]:
    """The k largest off-diagonal cells: {"true", "predicted", "count", "fraction_of_true"}."""
    cm = np.asarray(confusion, dtype=np.int64)
    off = cm - np.diag(np.diag(cm))
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    support = cm.sum(axis=1)
    out = []
    for t, p in zip(*np.unravel_index(flat, cm.shape), strict=True):
        if off[t, p] == 0:
            break
        out.append(
            {
                "true": class_names[t],
                "predicted": class_names[p],
                "count": int(off[t, p]),
                "fraction_of_true": float(off[t, p] / support[t]),
            }
        )
    return out
