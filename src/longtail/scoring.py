"""Macro-F1 scoring: of predictions, of a submission CSV against held-out labels, and of the leaderboard."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longtail.config import TargetPrior
from longtail.errors import ConfigError, DataError
from longtail.submission import examples, read_submission

# Digits in the classification_report table (the log pastes 2; LB differences are in the third digit).
REPORT_DIGITS = 4


# evaluate.target_prior: the class distribution of the test set every decision aims at.
# "balanced": each val image weighs 1/(its class's val count), so the confusion matrix is the one
# expected on a class-balanced test set; "train": the val split as drawn (like the training set).
TARGET_PRIORS: tuple[str, ...] = typing.get_args(TargetPrior)
BALANCED = "balanced"

# The stratified bootstrap behind the interval of the target-prior macro-F1.
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95


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
    """One set of predictions scored under a target prior: the headline numbers, the table, the confusion matrix.

    Averages run over the classes that occur in the truth or the predictions (sklearn's default, and
    so `f1_score(y_true, y_pred, average="macro")` exactly when `balanced` is False); under a
    balanced target prior each image weighs 1/(its class's count), as sklearn's `sample_weight`
    would. `confusion` holds raw counts over every class index; `support` in `per_class` is the
    raw image count.
    """

    macro_f1: float
    weighted_f1: float
    accuracy: float
    n: int
    per_class: list[ClassMetrics]
    report_text: str
    confusion: np.ndarray = field(repr=False)
    balanced: bool = False


def is_balanced(target_prior: str) -> bool:
    """Whether a target prior (config `evaluate.target_prior`) re-weights val to a class-balanced test set.

    Raises:
        ConfigError: a prior other than those in TARGET_PRIORS.
    """
    if target_prior not in TARGET_PRIORS:
        raise ConfigError(f"evaluate.target_prior must be one of {', '.join(TARGET_PRIORS)}, got {target_prior!r}")
    return target_prior == BALANCED


def confusion_counts(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """The (n_classes, n_classes) confusion matrix of raw counts, rows the truth (checked indices)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise DataError(f"{len(y_true)} true labels for {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise DataError("nothing to score: no labelled rows")
    top = int(max(y_true.max(), y_pred.max()))
    if top >= n_classes or min(y_true.min(), y_pred.min()) < 0:
        raise DataError(f"class index {top} is outside the {n_classes} class names")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_scores(confusion: np.ndarray, *, balanced: bool) -> tuple[np.ndarray, ...]:
    """Per-class precision, recall and F1 of a confusion matrix (or a stack of them), and which classes count.

    The one place longtail turns predictions into F1. Under `balanced` each row is divided by its
    sum first (every image weighs 1/its class's count), so precision is the one a class-balanced
    test set would give; recall is unchanged. Zero divisions give 0, as sklearn's zero_division=0.

    Args:
        confusion: (..., C, C) counts, rows the truth.

    Returns:
        precision, recall, f1, present: each (..., C); `present` marks the classes that occur in the
        truth or the predictions (the classes sklearn averages over).
    """
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=-1)
    present = (rows > 0) | (cm.sum(axis=-2) > 0)
    if balanced:
        cm = cm / np.where(rows > 0, rows, 1.0)[..., None]
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    predicted, actual = cm.sum(axis=-2), cm.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, present


def _macro(f1: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The mean F1 over the classes that count (the last axis), for one matrix's scores or a stack's."""
    return (f1 * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def macro_f1_of(confusion: np.ndarray, *, balanced: bool) -> np.ndarray | float:
    """Macro-F1 of a confusion matrix (a float), or of a stack of them (an array), under the target prior."""
    _, _, f1, present = class_scores(confusion, balanced=balanced)
    macro = _macro(f1, present)
    return float(macro) if np.ndim(macro) == 0 else macro


def macro_f1(y_true: Any, y_pred: Any, n_classes: int, *, target_prior: str = "train") -> float:
    """Macro-F1 of predictions under a target prior: the figure every longtail decision reads.

    Args:
        y_true, y_pred: integer class indices below `n_classes`.
        target_prior: "balanced" (each image weighs 1/its class's count) or "train" (as drawn).
    """
    return float(macro_f1_of(confusion_counts(y_true, y_pred, n_classes), balanced=is_balanced(target_prior)))


def classification_scores(y_true: Any, y_pred: Any, class_names: list[str], *,
                          target_prior: str = "train") -> ClassificationScores:
    """Macro/weighted F1, accuracy, per-class precision/recall/F1/support and the report table.

    Args:
        y_true, y_pred: integer class indices into `class_names`.
        target_prior: "balanced" scores as on a class-balanced test set (accuracy is then the mean
            recall); "train" (the default, and what a leaderboard does) scores the rows as given.
    """
    from sklearn.metrics import classification_report

    balanced = is_balanced(target_prior)
    n_classes = len(class_names)
    cm = confusion_counts(y_true, y_pred, n_classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    precision, recall, f1, present = class_scores(cm, balanced=balanced)
    labels = np.flatnonzero(present)
    support = cm.sum(axis=1)
    weight = (present & (support > 0)).astype(np.float64) if balanced else support.astype(np.float64)
    per_class = [
        ClassMetrics(int(i), class_names[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i in labels
    ]
    sample_weight = 1.0 / support[y_true] if balanced else None
    return ClassificationScores(
        macro_f1=float(_macro(f1, present)),
        weighted_f1=float((f1 * weight).sum() / weight.sum()) if weight.sum() else 0.0,
        accuracy=float((recall * weight).sum() / weight.sum()) if weight.sum() else 0.0,
        n=int(len(y_true)),
        per_class=per_class,
        report_text=classification_report(
            y_true, np.asarray(y_pred, dtype=np.int64), labels=labels, target_names=[class_names[i] for i in labels],
            digits=REPORT_DIGITS, zero_division=0, sample_weight=sample_weight,
        ),
        confusion=cm,
        balanced=balanced,
    )


@dataclass(frozen=True)
class MacroF1Interval:
    """A stratified-bootstrap interval of a macro-F1, and the classes whose F1 varies most across it.

    `noisiest` holds (class index, val images, bootstrap sd of its F1), largest sd first: the tail
    classes with a handful of val images that dominate the interval's width.
    """

    low: float
    high: float
    mean: float
    level: float
    samples: int
    noisiest: list[tuple[int, int, float]]


def bootstrap_interval(confusion: np.ndarray, *, balanced: bool, samples: int = BOOTSTRAP_SAMPLES,
                       level: float = BOOTSTRAP_LEVEL, seed: int = 0, top: int = 5) -> MacroF1Interval:
    """Stratified bootstrap of macro-F1: each class's val images are resampled with replacement.

    Resampling a class's images keeps its count and draws its row of predictions from a multinomial
    with the row's observed proportions, so `samples` confusion matrices are drawn directly.

    Args:
        confusion: (C, C) counts, rows the truth.
        balanced: score each draw under the balanced target prior.
        seed: the generator's seed (the interval is reproducible).
        top: how many of the noisiest classes to name.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    rng = np.random.default_rng(seed)
    draws = np.zeros((samples, *cm.shape), dtype=np.int64)
    for c, row in enumerate(cm):
        n = int(row.sum())
        if n:
            draws[:, c, :] = rng.multinomial(n, row / n, size=samples)
    _, _, f1, present = class_scores(draws, balanced=balanced)
    macro = _macro(f1, present)
    tail = (1.0 - level) / 2
    sd = f1.std(axis=0)
    support = cm.sum(axis=1)
    order = [int(i) for i in np.argsort(-sd, kind="stable") if support[i] > 0][:top]
    return MacroF1Interval(low=float(np.quantile(macro, tail)), high=float(np.quantile(macro, 1 - tail)),
                           mean=float(macro.mean()), level=level, samples=samples,
                           noisiest=[(i, int(support[i]), float(sd[i])) for i in order])


@dataclass(frozen=True)
class PairedGain:
    """How much higher one set of predictions' macro-F1 is than a baseline's on the same images, and
    the paired stratified-bootstrap interval of that difference."""

    gain: float
    low: float
    high: float

    def text(self) -> str:
        """e.g. "+0.0010 (95% interval -0.0093 to +0.0112)"."""
        return f"{self.gain:+.4f} (95% interval {self.low:+.4f} to {self.high:+.4f})"


# Confusion-matrix cells per chunk of bootstrap draws (bounds memory at 200+ classes and large val splits).
_PAIRED_CHUNK_CELLS = 4_000_000


def paired_gains(y_true: Any, predictions: Any, n_classes: int, *, balanced: bool, baseline: int = 0,
                 samples: int = BOOTSTRAP_SAMPLES, level: float = BOOTSTRAP_LEVEL, seed: int = 0) -> list[PairedGain]:
    """Macro-F1 of each set of predictions minus the baseline set's, each with a paired bootstrap interval.

    Every draw resamples each class's images with replacement (stratified, as bootstrap_interval)
    and scores every set on the same draw, so what the sets share (which tail images happened to
    be drawn) cancels in the difference. Two sets whose marginal intervals overlap can still differ
    clearly; two whose macro-F1s differ by 0.001 on a few thousand images usually do not.

    Args:
        y_true: (N,) integer labels.
        predictions: (K, N) integer predictions, one row per set.
        baseline: the row every set is compared with (its own gain is 0).
    """
    y = np.asarray(y_true, dtype=np.int64)
    preds = np.asarray(predictions, dtype=np.int64)
    if preds.ndim != 2 or preds.shape[1] != len(y):
        raise DataError(f"{preds.shape} predictions for {len(y)} labels: expected one row of {len(y)} per set")
    k = len(preds)
    point = np.array([macro_f1_of(confusion_counts(y, p, n_classes), balanced=balanced) for p in preds])
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(y == c) for c in range(n_classes)]
    members = [m for m in members if len(m)]
    chunk = max(1, _PAIRED_CHUNK_CELLS // max(len(y), n_classes * n_classes))
    macros = np.empty((k, samples))
    for start in range(0, samples, chunk):
        s = min(chunk, samples - start)
        # (s, N) image indices: each class's images drawn with replacement from that class.
        idx = np.concatenate([m[rng.integers(0, len(m), size=(s, len(m)))] for m in members], axis=1)
        offset = (np.arange(s) * n_classes * n_classes)[:, None]
        for j, p in enumerate(preds):
            cells = (offset + y[idx] * n_classes + p[idx]).ravel()
            draws = np.bincount(cells, minlength=s * n_classes * n_classes).reshape(s, n_classes, n_classes)
            _, _, f1, present = class_scores(draws, balanced=balanced)
            macros[j, start : start + s] = _macro(f1, present)
    diff = macros - macros[baseline]
    tail = (1.0 - level) / 2
    return [PairedGain(gain=float(point[j] - point[baseline]), low=float(np.quantile(diff[j], tail)),
                       high=float(np.quantile(diff[j], 1 - tail))) for j in range(k)]


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
