"""evaluate(): one model directory on one labelled split, from predictions to the gate, the files and the MLflow run."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from longtail.config import EvaluateConfig
from longtail.evaluation.frequency import ClassResult, train_class_counts
from longtail.evaluation.gate import class_warnings, gate
from longtail.evaluation.plots import plot_confusion_matrix, plot_f1_vs_frequency
from longtail.evaluation.report import render_markdown, write_report_text
from longtail.handed_on_error import raise_handed_on
from longtail.kfp_metrics import kfp_confusion_matrix, kfp_scalar_metrics
from longtail.model_dir import EvaluationDir, ModelDir
from longtail.prediction import open_for_split
from longtail.scoring import (
    MacroF1Interval,
    bootstrap_interval,
    classification_scores,
    is_balanced,
    macro_f1_of,
    top_confusions,
)
from longtail.tracking.model_runs import log_evaluation

log = logging.getLogger(__name__)


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
    target_prior: str = "balanced"
    macro_f1_plain: float = 0.0
    interval: MacroF1Interval | None = None


def model_name(model_dir: ModelDir) -> str:
    """The experiment name saved with the model (config.yaml), else the folder's name.

    In a pipeline every model folder is called "model"; the experiment name says which one it is.
    """
    return str(model_dir.config().get("name") or model_dir.path.name)


def saved_target_prior(model_dir: ModelDir) -> str:
    """evaluate.target_prior of the config the model was trained with (the config's default when unset)."""
    section = model_dir.config().get("evaluate") or {}
    return str(section.get("target_prior") or EvaluateConfig().target_prior)


def evaluate(
    model_dir: str | Path,
    val_h5: str | Path,
    out_dir: str | Path,
    *,
    min_macro_f1: float = 0.0,
    tracking_uri: str | None = None,
    batch_size: int = 256,
    tta: bool = False,
    tta_shift: float = 0.0,
    weights_json: str | Path | None = None,
    target_prior: str | None = None,
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
        tta_shift: also average the image (and its flip) moved this fraction of its side each way, as predict.
        weights_json: `longtail weights` output; its train counts put the long-tail plot's x axis
            in train images (else counts stored with the model, else the stratified val support).
        target_prior: "balanced" or "train" (config `evaluate.target_prior`); None: the one the
            model was trained with. macro-F1, the gate and the interval use it; the val split's
            plain macro-F1 is reported beside it.

    Returns:
        The numbers, the gate result and its reason, KFP structures and the written paths.
    """
    # A retried train step hands its user's error on here, the first step after it with no retries.
    raise_handed_on(model_dir, "train")
    gate(0.0, min_macro_f1)  # reject a bad gate or prior before minutes of prediction
    directory = ModelDir(model_dir)
    target_prior = target_prior or saved_target_prior(directory)
    is_balanced(target_prior)
    opened = open_for_split(directory, val_h5, labelled=True)
    preprocessing, class_names = opened.preprocessing, opened.preprocessing.class_names
    probs = opened.probabilities(batch_size=batch_size, tta=tta, tta_shift=tta_shift)
    scores = classification_scores(opened.split.labels, probs.argmax(axis=1), class_names, target_prior=target_prior)
    plain = float(macro_f1_of(scores.confusion, balanced=False))
    interval = bootstrap_interval(scores.confusion, balanced=scores.balanced)
    passed, reason = gate(scores.macro_f1, min_macro_f1)

    support = scores.confusion.sum(axis=1)
    counts, counts_source = train_class_counts(class_names, preprocessing.extra, support, weights_json)
    per_class = [ClassResult(**asdict(c), train_count=int(counts[c.index])) for c in scores.per_class]
    warnings = class_warnings(scores, class_names, support, directory.load_history())
    for w in warnings:
        log.warning("%s", w)

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    evaluation_dir = EvaluationDir(out_dir)
    paths = evaluation_dir.paths()
    metrics = kfp_scalar_metrics(scores, min_macro_f1=min_macro_f1, passed=passed, macro_f1_plain=plain,
                                 interval=interval)
    confusion = kfp_confusion_matrix(scores.confusion, class_names)
    confusions = top_confusions(scores.confusion, class_names)
    title = f"{model_name(directory)} on {Path(val_h5).name}"

    write_report_text(paths["report_txt"], scores.report_text)
    plot_confusion_matrix(scores.confusion, class_names, paths["confusion_png"], title=title)
    plot_f1_vs_frequency(per_class, paths["per_class_png"], macro_f1=scores.macro_f1, x_label=counts_source, title=title)
    frequency = "train images" if counts_source.startswith("train") else "val images"
    write_report_text(
        paths["report_md"],
        render_markdown(
            title=title, scores=scores, per_class=per_class, passed=passed, reason=reason,
            warnings=warnings, confusions=confusions, tta=tta, tta_shift=tta_shift, frequency=frequency,
            target_prior=target_prior, macro_f1_plain=plain, interval=interval,
        ),
    )
    evaluation_dir.save_metrics(
        {
            "model_dir": str(model_dir),
            "split": str(val_h5),
            "macro_f1": scores.macro_f1,
            "target_prior": target_prior,
            "macro_f1_plain": plain,
            "macro_f1_interval": [interval.low, interval.high],
            "interval_level": interval.level,
            "noisiest_classes": [{"class": class_names[i], "val_images": n, "f1_sd": sd}
                                 for i, n, sd in interval.noisiest],
            "weighted_f1": scores.weighted_f1,
            "accuracy": scores.accuracy,
            "n": scores.n,
            "min_macro_f1": min_macro_f1,
            "passed": passed,
            "reason": reason,
            "tta": tta,
            "tta_shift": tta_shift,
            "metrics": metrics,
            "warnings": warnings,
            "train_counts_source": counts_source,
            "per_class": [asdict(c) for c in per_class],
            "top_confusions": confusions,
            "class_names": class_names,
            "confusion_matrix": scores.confusion.astype(int).tolist(),
        },
    )
    evaluation_dir.record_outputs()  # last of the files, so a re-run may replace them
    run_id = log_evaluation(directory.run_info(), metrics, passed=passed, reason=reason, split=Path(val_h5).name,
                            files=list(paths.values()), tracking_uri=tracking_uri)
    log.info("macro-F1 %.4f (%s target prior; %.0f%% interval %.4f-%.4f; val as drawn %.4f) on %d images; gate %s: %s",
             scores.macro_f1, target_prior, 100 * interval.level, interval.low, interval.high, plain, scores.n,
             "passed" if passed else "failed", reason)
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
        target_prior=target_prior,
        macro_f1_plain=plain,
        interval=interval,
    )

