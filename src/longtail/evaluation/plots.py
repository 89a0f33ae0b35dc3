"""The evaluation plots: a row-normalised confusion matrix and per-class F1 against class frequency, readable to 200+ classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from longtail.atomic_file import atomic_path
from longtail.evaluation.frequency import ClassResult
from longtail.scoring import most_confused_classes

# A confusion matrix beyond this many classes shows only the most confused ones.
PLOT_MAX_CLASSES = 30
# Cells get their value written in them up to this many classes.
PLOT_ANNOTATE_CLASSES = 15
# Beyond PLOT_MAX_CLASSES, the per-class plot names this many worst and best classes beside the scatter.
PLOT_EXTREMES = 15


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

