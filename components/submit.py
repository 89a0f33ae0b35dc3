"""Step 5, submit: the competition CSV from the test split, through the model's own preprocessing."""

from kfp import dsl

from longtail.components.images import image_ref


@dsl.component(base_image=image_ref("evaluate"), install_kfp_package=False)
def submit(
    model: dsl.Input[dsl.Model],
    test_data: dsl.Input[dsl.Dataset],
    config: dict,
    submission: dsl.Output[dsl.Dataset],
):
    """Writes submission (id,label CSV, one row per test image) and logs it to the model's MLflow run."""
    import os

    from longtail.config import config_from_dict
    from longtail.prediction import predict_submission
    from longtail.splits import split_path
    from longtail.submission import ROWS_KEY
    from longtail.tracking.store import tracking_uri_from_env

    settings = config_from_dict(config).evaluate  # KFP hands every number over as a float: checked back to int
    result = predict_submission(model.path, split_path(test_data.path, "test"), submission.path,
                                tta=settings.tta, tta_shift=settings.tta_shift,
                                tracking_uri=tracking_uri_from_env(os.environ))
    submission.metadata.update({ROWS_KEY: result.n_rows})


@dsl.component(base_image=image_ref("evaluate"), install_kfp_package=False)
def skip_submission(
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Artifact],
    submission: dsl.Output[dsl.Dataset],
) -> str:
    """The gate closed: record why on the MLflow run and as the submission (a note marked skipped), submit nothing."""
    import os

    from longtail.post_run import record_gate_closed
    from longtail.submission import write_skipped_submission
    from longtail.tracking.store import tracking_uri_from_env

    reason = record_gate_closed(model.path, evaluation.path,
                                tracking_uri=tracking_uri_from_env(os.environ))
    submission.metadata.update(write_skipped_submission(submission.path, reason))
    print(f"submission skipped: {reason}")
    return reason
