"""Step 4, evaluate: macro-F1, the report, plots, and the gate that decides on submission."""

from kfp import dsl

from longtail.components.images import image_ref


@dsl.component(base_image=image_ref("evaluate"), install_kfp_package=False)
def evaluate(
    model: dsl.Input[dsl.Model],
    data: dsl.Input[dsl.Dataset],
    class_weights: dsl.Input[dsl.Artifact],
    config: dict,
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    confusion: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.Markdown],
    plots: dsl.Output[dsl.HTML],
) -> bool:
    """Returns whether val macro-F1 (under evaluate.target_prior) reached evaluate.min_macro_f1 (the submission gate)."""
    import os
    import shutil

    from longtail.config import config_from_dict
    from longtail.evaluation import evaluate as evaluate_model
    from longtail.report_html import write_html_report
    from longtail.splits import split_path
    from longtail.tracking.store import tracking_uri_from_env

    # Through the config's own checks: KFP hands every number over as a float (epochs 40 as 40.0).
    settings = config_from_dict(config).evaluate
    result = evaluate_model(
        model.path, split_path(data.path, "val"), evaluation.path,
        min_macro_f1=settings.min_macro_f1, tta=settings.tta, tta_shift=settings.tta_shift,
        weights_json=class_weights.path, target_prior=settings.target_prior,
        tracking_uri=tracking_uri_from_env(os.environ),
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    confusion.log_confusion_matrix(result.confusion["categories"], result.confusion["matrix"])
    shutil.copyfile(result.paths["report_md"], report.path)
    write_html_report(evaluation.path, plots.path)
    return result.passed
