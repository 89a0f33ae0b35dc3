"""What evaluate writes a person to read: report.md for KFP's Markdown artifact, and text output (names: longtail.model_dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longtail.atomic_file import write_text
from longtail.evaluation.frequency import ClassResult
from longtail.model_dir import REPORT_TXT
from longtail.prediction import tta_text
from longtail.scoring import ClassificationScores, MacroF1Interval

# Rows of the per-class Markdown table (worst F1 first); report.txt always has every class.
MARKDOWN_MAX_ROWS = 40


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
    tta_shift: float = 0.0,
    frequency: str = "train images",
    target_prior: str = "train",
    macro_f1_plain: float | None = None,
    interval: MacroF1Interval | None = None,
) -> str:
    """report.md: headline numbers, the gate, warnings, top confusions, the per-class table and the report."""
    span = "" if interval is None else f" ({100 * interval.level:.0f}% interval {interval.low:.4f}–{interval.high:.4f})"
    lines = [
        f"# Evaluation: {title}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| **macro-F1** (the leaderboard metric, {target_prior} target prior) | **{scores.macro_f1:.4f}**{span} |",
        *([] if macro_f1_plain is None else [f"| macro-F1 of the split as drawn | {macro_f1_plain:.4f} |"]),
        f"| weighted-F1 | {scores.weighted_f1:.4f} |",
        f"| accuracy | {scores.accuracy:.4f} |",
        f"| images | {scores.n} |",
        f"| classes | {len(per_class)} |",
        f"| test-time augmentation | {tta_text(tta, tta_shift) or 'none'} |",
        "",
        f"**Gate: {'PASSED' if passed else 'FAILED'}**: {reason}",
        "",
    ]
    if interval is not None and interval.noisiest:
        names = {c.index: c.name for c in per_class}
        noisy = ", ".join(f"{_md(names.get(i, str(i)))} ({n} images, F1 sd {sd:.3f})" for i, n, sd in interval.noisiest)
        lines += [f"The interval is a stratified bootstrap of the split ({interval.samples} draws). "
                  f"The classes whose F1 varies most across it, and so widen it most: {noisy}.", ""]
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
        heading += f" ({len(shown)} worst of {len(rows)}; {REPORT_TXT} has all)"
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


def write_report_text(path: Path, text: str) -> Path:
    """Write `text` atomically, ending in one newline."""
    return write_text(path, text if text.endswith("\n") else text + "\n")

