"""Evaluation of a model directory on a labelled split, one job per module.

- run: evaluate(), from predictions to the files and the model's MLflow run;
- gate: the macro-F1 gate, the warnings beside it, and why a closed gate closed;
- frequency: train images per class, the x axis of the long-tail view;
- report: report.md and the text files (their names: longtail.model_dir.EvaluationDir);
- plots: the confusion matrix and per-class F1 against frequency.
"""

from longtail.evaluation.frequency import ClassResult, train_class_counts
from longtail.evaluation.gate import (
    class_warnings,
    closed_gate_reason,
    gate,
    overfitting_warning,
)
from longtail.evaluation.plots import plot_confusion_matrix, plot_f1_vs_frequency
from longtail.evaluation.report import MARKDOWN_MAX_ROWS, render_markdown
from longtail.evaluation.run import EvaluationResult, evaluate, model_name
from longtail.model_dir import CONFUSION_PNG, METRICS_FILE, PER_CLASS_PNG, REPORT_MD, REPORT_TXT

__all__ = [
    "CONFUSION_PNG",
    "MARKDOWN_MAX_ROWS",
    "METRICS_FILE",
    "PER_CLASS_PNG",
    "REPORT_MD",
    "REPORT_TXT",
    "ClassResult",
    "EvaluationResult",
    "class_warnings",
    "evaluate",
    "gate",
    "model_name",
    "overfitting_warning",
    "plot_confusion_matrix",
    "plot_f1_vs_frequency",
    "closed_gate_reason",
    "render_markdown",
    "train_class_counts",
]
