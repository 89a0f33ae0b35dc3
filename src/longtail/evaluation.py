"""Evaluation of a model directory on a labelled split: macro-F1 report, plots, overfitting check and the gate."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longtail.atomic_file import atomic_path, write_text
from longtail.errors import ConfigError, DataError
from longtail.kfp_metrics import kfp_confusion_matrix, kfp_scalar_metrics
from longtail.logit_adjustment import LogitAdjustment
from longtail.model_dir import CONFIG_FILE, HISTORY_FILE
from longtail.prediction import open_split_for_model, predict_probabilities
from longtail.preprocessing import load_model
from longtail.scoring import (
    ClassificationScores,
    ClassMetrics,
    classification_scores,
    most_confused_classes,
    top_confusions,
)
from longtail.tracking.model_runs import log_evaluation, log_submission_skipped

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_TXT = "report.txt"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
PER_CLASS_PNG = "per_class_f1.png"

# The seed log's EXP1: "Obviously overfitting, acc reaches 1" while val lagged ten points behind.
OVERFIT_TRAIN_ACCURACY = 0.98
OVERFIT_GAP = 0.10
# A confusion matrix beyond this many classes shows only the most confused ones.
PLOT_MAX_CLASSES = 30
# Cells get their value written in them up to this many classes.
PLOT_ANNOTATE_CLASSES = 15
# Beyond PLOT_MAX_CLASSES, the per-class plot names this many worst and best classes beside the scatter.
PLOT_EXTREMES = 15
# Rows of the per-class Markdown table (worst F1 first); report.txt always has every class.
MARKDOWN_MAX_ROWS = 40


@dataclass
class ClassResult(ClassMetrics):
    """One class's evaluation, with its train frequency for the long-tail view."""

    train_count: int | None


@dataclass
class EvaluationResult:
    """What `evaluate` found and wrote.

    `metrics` is flat {name: float} for KFP's `Metrics` artifact (logged to MLflow as eval_<name>);
    `confusion` is {"categories", "matrix", ...} for `ClassificationMetrics.log_confusion_matrix`;
    `passed` is the gate the pipeline branches on, and `reason` says why in words.
    """

    macro_f1: float
    weighted_f1: float
    accuracy: float
    passed: bool
    reason: str
    per_class: list[ClassResult]
    report_text: str
    metrics: dict[str, float]
    confusion: dict[str, Any] = field(repr=False)
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    n: int = 0
    min_macro_f1: float = 0.0
    mlflow_run_id: str | None = None


def model_name(model_dir: str | Path) -> str:
    """The experiment name saved with the model (config.yaml), else the folder's name.

    In a pipeline every model folder is called "model"; the experiment name says which one it is.
    """
    config = Path(model_dir) / CONFIG_FILE
    if config.is_file():
        import yaml

        name = (yaml.safe_load(config.read_text()) or {}).get("name")
        if name:
            return str(name)
    return Path(model_dir).name


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


def load_history(model_dir: str | Path) -> dict[str, list[float]]:
    """Per-epoch training metrics from history.json ({} when the model directory has none)."""
    path = Path(model_dir) / HISTORY_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return {}
    return {k: list(v) for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}


def overfitting_warning(history: dict[str, list[float]], macro_f1: float) -> str | None:
    """A warning when train accuracy reached ~1 while val macro-F1 lags well behind (the log's EXP1)."""
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


def train_class_counts(
    model_dir: str | Path,
    class_names: list[str],
    extra: dict[str, Any],
    val_support: np.ndarray,
    weights_json: str | Path | None = None,
) -> tuple[np.ndarray, str]:
    """Images per class in the training data, and where that number came from.

    Looks for counts (`class_counts`, or `counts` as `longtail weights` writes them: a list by
    class index, or {name: count}) in `weights_json`, then preprocessing.json's `extra`, then
    class_counts.json / weights.json / history.json in the model directory. Without them it
    falls back to the val support, which ingest's stratified split keeps proportional to train.
    """
    files = [Path(weights_json)] if weights_json else []
    files += [Path(model_dir) / n for n in ("class_counts.json", "weights.json", HISTORY_FILE)]
    candidates: list[tuple[Any, str]] = [(extra, "preprocessing.json")]
    for path in files:
        if path.is_file():
            try:
                candidates.append((json.loads(path.read_text()), path.name))
            except json.JSONDecodeError:
                log.warning("ignoring unreadable %s", path)
    for data, source in candidates:
        if not isinstance(data, dict):
            continue
        if "class_names" in data and data["class_names"] != class_names:
            log.warning("ignoring class counts in %s: its class_names differ from the model's", source)
            continue
        for key in ("class_counts", "counts"):
            counts = _counts_by_index(data.get(key), class_names)
            if counts is not None:
                return counts, f"train images per class ({source})"
    return np.asarray(val_support, dtype=np.int64), "val images per class (stratified like train)"


def _counts_by_index(value: Any, class_names: list[str]) -> np.ndarray | None:
    if isinstance(value, dict) and all(n in value for n in class_names):
        return np.asarray([int(value[n]) for n in class_names], dtype=np.int64)
    if isinstance(value, list) and len(value) == len(class_names):
        return np.asarray([int(v) for v in value], dtype=np.int64)
    return None


def evaluate(
    model_dir: str | Path,
    val_h5: str | Path,
    out_dir: str | Path,
    *,
    min_macro_f1: float = 0.0,
    tracking_uri: str | None = None,
    batch_size: int = 256,
    tta: bool = False,
    weights_json: str | Path | None = None,
) -> EvaluationResult:
    """Evaluate a model directory on a labelled split and write the report a person reads.

    Predictions go through the model's own preprocessing.json, after checking the split was
    ingested the same way, and its post-hoc logit adjustment when it has one, as predict does. Writes metrics.json, report.txt (sklearn's classification_report),
    report.md (for KFP's Markdown artifact), confusion_matrix.png and per_class_f1.png into
    `out_dir`, and logs them with the eval_* metrics into the model's MLflow run.

    Args:
        min_macro_f1: the gate (config `evaluate.min_macro_f1`); 0 passes everything.
        tracking_uri: overrides the MLflow URI stored in the model directory.
        tta: average the softmax of each image and its left-right flip, as `predict(tta=True)`.
        weights_json: `longtail weights` output; its train counts put the long-tail plot's x axis
            in train images (else counts stored with the model, else the stratified val support).

    Returns:
        The numbers, the gate result and its reason, KFP structures and the written paths.
    """
    gate(0.0, min_macro_f1)  # reject a bad gate before minutes of prediction
    preprocessing, info = open_split_for_model(model_dir, val_h5)
    if not info.has_labels or info.labels is None:
        raise DataError(
            f"{Path(val_h5).name} has no labels: evaluate needs a labelled split (val.h5 from ingest); "
            "use `longtail predict` for an unlabelled test split"
        )
    class_names = preprocessing.class_names
    model = load_model(model_dir)
    probs = predict_probabilities(model, preprocessing, val_h5, batch_size=batch_size, tta=tta,
                                  adjustment=LogitAdjustment.load(model_dir))
    scores = classification_scores(info.labels, probs.argmax(axis=1), class_names)
    passed, reason = gate(scores.macro_f1, min_macro_f1)

    support = scores.confusion.sum(axis=1)
    counts, counts_source = train_class_counts(model_dir, class_names, preprocessing.extra, support, weights_json)
    per_class = [ClassResult(**asdict(c), train_count=int(counts[c.index])) for c in scores.per_class]
    warnings = _warnings(scores, class_names, support, load_history(model_dir))
    for w in warnings:
        log.warning("%s", w)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics_json": out / METRICS_FILE,
        "report_txt": out / REPORT_TXT,
        "report_md": out / REPORT_MD,
        "confusion_png": out / CONFUSION_PNG,
        "per_class_png": out / PER_CLASS_PNG,
    }
    metrics = kfp_scalar_metrics(scores, min_macro_f1=min_macro_f1, passed=passed)
    confusion = kfp_confusion_matrix(scores.confusion, class_names)
    confusions = top_confusions(scores.confusion, class_names)
    title = f"{model_name(model_dir)} on {Path(val_h5).name}"

    _write_text(paths["report_txt"], scores.report_text)
    plot_confusion_matrix(scores.confusion, class_names, paths["confusion_png"], title=title)
    plot_f1_vs_frequency(per_class, paths["per_class_png"], macro_f1=scores.macro_f1, x_label=counts_source, title=title)
    frequency = "train images" if counts_source.startswith("train") else "val images"
    _write_text(
        paths["report_md"],
        render_markdown(
            title=title, scores=scores, per_class=per_class, passed=passed, reason=reason,
            warnings=warnings, confusions=confusions, tta=tta, frequency=frequency,
        ),
    )
    _write_text(
        paths["metrics_json"],
        json.dumps(
            {
                "model_dir": str(model_dir),
                "split": str(val_h5),
                "macro_f1": scores.macro_f1,
                "weighted_f1": scores.weighted_f1,
                "accuracy": scores.accuracy,
                "n": scores.n,
                "min_macro_f1": min_macro_f1,
                "passed": passed,
                "reason": reason,
                "tta": tta,
                "metrics": metrics,
                "warnings": warnings,
                "train_counts_source": counts_source,
                "per_class": [asdict(c) for c in per_class],
                "top_confusions": confusions,
                "class_names": class_names,
                "confusion_matrix": scores.confusion.astype(int).tolist(),
            },
            indent=1,
        ),
    )
    run_id = log_evaluation(model_dir, metrics, passed=passed, reason=reason, split=Path(val_h5).name,
                            files=list(paths.values()), tracking_uri=tracking_uri)
    log.info("macro-F1 %.4f on %d images; gate %s: %s", scores.macro_f1, scores.n, "passed" if passed else "failed", reason)
    return EvaluationResult(
        macro_f1=scores.macro_f1,
        weighted_f1=scores.weighted_f1,
        accuracy=scores.accuracy,
        passed=passed,
        reason=reason,
        per_class=per_class,
        report_text=scores.report_text,
        metrics=metrics,
        confusion=confusion,
        warnings=warnings,
        paths=paths,
        n=scores.n,
        min_macro_f1=min_macro_f1,
        mlflow_run_id=run_id,
    )


def _warnings(
    scores: ClassificationScores, class_names: list[str], support: np.ndarray, history: dict[str, list[float]]
) -> list[str]:
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


def render_markdown(
    *,
    title: str,
    scores: ClassificationScores,
    per_class: list[ClassResult],
    passed: bool,
    reason: str,
    warnings: list[str],
    confusions: list[dict[str, Any]],
    tta: bool = False,
    frequency: str = "train images",
) -> str:
    """report.md: headline numbers, the gate, warnings, top confusions, the per-class table and the report."""
    lines = [
        f"# Evaluation: {title}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| **macro-F1** (the leaderboard metric) | **{scores.macro_f1:.4f}** |",
        f"| weighted-F1 | {scores.weighted_f1:.4f} |",
        f"| accuracy | {scores.accuracy:.4f} |",
        f"| images | {scores.n} |",
        f"| classes | {len(per_class)} |",
        f"| flip TTA | {'yes' if tta else 'no'} |",
        "",
        f"**Gate: {'PASSED' if passed else 'FAILED'}**: {reason}",
        "",
    ]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if confusions:
        lines += ["## Top confusions", "", "| true | predicted as | images | share of true class |", "|---|---|---:|---:|"]
        lines += [
            f"| {_md(c['true'])} | {_md(c['predicted'])} | {c['count']} | {c['fraction_of_true']:.1%} |"
            for c in confusions
        ]
        lines.append("")
    rows = sorted(per_class, key=lambda c: (c.f1, c.index))
    shown = rows[:MARKDOWN_MAX_ROWS]
    heading = "## Per class, worst F1 first"
    if len(rows) > len(shown):
        heading += f" ({len(shown)} worst of {len(rows)}; report.txt has all)"
    lines += [heading, "", f"| class | {frequency} | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {_md(c.name)} | {'' if c.train_count is None else c.train_count} | {c.precision:.3f} | "
        f"{c.recall:.3f} | {c.f1:.3f} | {c.support} |"
        for c in shown
    ]
    lines += ["", "## classification_report", "", "```text", scores.report_text.rstrip(), "```", ""]
    return "\n".join(lines)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_confusion_matrix(
    confusion: np.ndarray, class_names: list[str], path: str | Path, *, title: str = "", max_classes: int = PLOT_MAX_CLASSES
) -> Path:
    """A row-normalised confusion matrix PNG, readable from 2 to 200+ classes.

    Beyond `max_classes` only the most confused classes are drawn (their rows still divided by
    the full class support, so a cell is the share of that true class). A square-root colour
    scale keeps small confusions visible next to a bright diagonal.
    """
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    cm = np.asarray(confusion, dtype=np.float64)
    n = cm.shape[0]
    support = cm.sum(axis=1)
    keep = most_confused_classes(cm, max_classes)
    k = len(keep)
    norm = cm[np.ix_(keep, keep)] / np.maximum(support[keep], 1)[:, None]
    names = [_short(class_names[i]) for i in keep]
    side = max(5.0, 0.32 * k + 3.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=110)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(k), labels=names, rotation=90, fontsize=8 if k > 15 else 9)
    ax.set_yticks(range(k), labels=names, fontsize=8 if k > 15 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= PLOT_ANNOTATE_CLASSES:
        for (i, j), v in np.ndenumerate(norm):
            if v >= 0.005:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.5 else "black")
    subtitle = f"{k} most confused of {n} classes" if k < n else f"{n} classes"
    ax.set_title(f"Confusion matrix, row-normalised ({subtitle})\n{title}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_f1_vs_frequency(
    per_class: list[ClassResult], path: str | Path, *, macro_f1: float, x_label: str = "train images per class", title: str = ""
) -> Path:
    """Per-class F1 against train images per class on a log axis: the long tail made visible.

    A dashed line marks macro-F1, a solid line the mean F1 per frequency bin (from 30 classes);
    the worst classes are named (every class up to 20). Beyond `PLOT_MAX_CLASSES` classes names
    would pile up on the scatter, so a second panel lists the `PLOT_EXTREMES` worst and best
    classes by name as bars, with their train counts.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    counts = np.asarray([max(c.train_count or 0, 1) for c in per_class], dtype=np.float64)
    f1 = np.asarray([c.f1 for c in per_class], dtype=np.float64)
    many = len(per_class) > PLOT_MAX_CLASSES
    fig = Figure(figsize=(15, 6.5) if many else (9, 5.5), dpi=110)
    ax, bars = fig.subplots(1, 2, width_ratios=[3, 2]) if many else (fig.add_subplot(), None)
    ax.scatter(counts, f1, s=28 if len(per_class) <= 50 else 14, alpha=0.7, color="tab:blue", edgecolors="none", label="class")
    ax.axhline(macro_f1, color="tab:red", linestyle="--", linewidth=1, label=f"macro-F1 {macro_f1:.3f}")
    if len(per_class) >= 30 and counts.max() > counts.min():
        edges = np.geomspace(counts.min(), counts.max() * 1.0001, 9)
        which = np.clip(np.digitize(counts, edges) - 1, 0, len(edges) - 2)
        centres, means = [], []
        for b in range(len(edges) - 1):
            if np.any(which == b):
                centres.append(float(np.sqrt(edges[b] * edges[b + 1])))
                means.append(float(f1[which == b].mean()))
        ax.plot(centres, means, color="tab:orange", linewidth=2, marker="o", markersize=4, label="mean F1 per frequency bin")
    named = range(len(per_class)) if len(per_class) <= 20 else [] if many else np.argsort(f1, kind="stable")[:8]
    for rank, i in enumerate(named):
        offset = (4, 3) if rank % 2 == 0 else (4, -9)  # alternate above/below so neighbours' names don't overlap
        ax.annotate(_short(per_class[i].name, 16), (counts[i], f1[i]), textcoords="offset points", xytext=offset, fontsize=7)
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    if counts.max() / counts.min() < 20:  # under ~a decade only minor ticks fall inside: label them too
        ax.xaxis.set_minor_formatter(plain)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel(f"{x_label}, log scale")
    ax.set_ylabel("F1")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Per-class F1 against class frequency ({len(per_class)} classes)\n{title}", fontsize=10)
    if bars is not None:
        _plot_extremes(bars, per_class, f1, counts)
    fig.tight_layout()
    return _save(fig, path)


def _plot_extremes(ax: Any, per_class: list[ClassResult], f1: np.ndarray, counts: np.ndarray) -> None:
    """Horizontal F1 bars of the worst classes (bottom) and the best (top), each named with its count."""
    order = np.argsort(f1, kind="stable")
    k = min(PLOT_EXTREMES, len(order) // 2)
    worst, best = order[:k], order[::-1][:k][::-1]
    rows = list(worst) + list(best)
    y = np.concatenate([np.arange(k), np.arange(k) + k + 1])  # one empty row between the two groups
    colours = ["tab:red"] * k + ["tab:green"] * k
    ax.barh(y, [max(f1[i], 0.004) for i in rows], color=colours, alpha=0.75)  # a sliver shows F1 = 0
    ax.set_yticks(y, labels=[f"{_short(per_class[i].name, 28)} ({int(counts[i]):g})" for i in rows], fontsize=7)
    for yy, i in zip(y, rows, strict=True):
        inside = f1[i] > 0.85  # no room right of the bar: write the value inside its end
        ax.text(f1[i] - 0.01 if inside else f1[i] + 0.01, yy, f"{f1[i]:.2f}", va="center", fontsize=7,
                ha="right" if inside else "left", color="white" if inside else "black")
    ax.axhline(k, color="grey", linewidth=0.5)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(-0.7, 2 * k + 0.7)
    ax.set_xlabel("F1 (train images in brackets)")
    ax.set_title(f"{k} worst (red) and {k} best (green) of {len(per_class)} classes", fontsize=10)
    ax.grid(True, axis="x", alpha=0.25)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _write_text(path: Path, text: str) -> Path:
    return write_text(path, text if text.endswith("\n") else text + "\n")


def record_gate_closed(model_dir: str | Path, evaluation_dir: str | Path, *, tracking_uri: str | None = None) -> str:
    """The pipeline's gate closed: tag the model's MLflow run with why no submission was written.

    Returns:
        The reason, as evaluate worded it (e.g. "macro-F1 0.4120 < gate 0.9000").
    """
    metrics_path = Path(evaluation_dir) / METRICS_FILE
    if not metrics_path.is_file():
        raise DataError(f"{evaluation_dir} is not an evaluation folder: {METRICS_FILE} is missing")
    reason = json.loads(metrics_path.read_text()).get("reason", "the evaluation gate failed")
    log_submission_skipped(model_dir, reason, tracking_uri=tracking_uri)
    return reason
