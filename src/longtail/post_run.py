"""After a run, above tracking: score its submission, tag and register its model, or record why the gate closed.

`longtail run`, `longtail sweep` and `longtail train` (and the pipeline's skip step) end here, so a
run is scored, tagged and registered the same way whichever way it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from longtail.evaluation.gate import closed_gate_reason
from longtail.model_dir import ModelDir
from longtail.scoring import score
from longtail.tracking.model_runs import log_submission_skipped, log_test_score
from longtail.tracking.names import CANDIDATE, TEST_MACRO_F1, TEST_MACRO_F1_TAG
from longtail.tracking.registry import alias_version, register_run_model, tag_version, version_tags


@dataclass
class RunClose:
    """What the post-run step did: the submission's test macro-F1 and the model version it registered."""

    test_macro_f1: float | None = None
    registered_version: str | None = None


def close_run(tracking_uri: str, run_id: str, *, submission: str | Path | None = None,
              labels: str | Path | None = None, test_metric: str = TEST_MACRO_F1, register_as: str = "",
              config_name: str = "", val_macro_f1: float | None = None,
              registered_alias: str | None = None) -> RunClose:
    """Score the submission against held-out labels, then register (or tag) the model.

    Args:
        run_id: the MLflow run the test score is logged to (a training run, or a sweep's parent).
        submission, labels: both given: the submission is scored and logged as `test_metric`.
        register_as: registered-model name ("" to skip).
        config_name, val_macro_f1: the new version's tags (with the test score when there is one).
        registered_alias: the model was registered already (a sweep's close-out points this alias
            at its best run): the version the alias names gets the test score as a tag instead.
            None: a new version of `register_as` is registered from `run_id` with the alias `candidate`.

    Returns:
        The test macro-F1 (None when not scored) and the new version (None when none was registered).
    """
    result = RunClose()
    if submission is not None and labels is not None:
        result.test_macro_f1 = score(submission, labels).macro_f1
        log_test_score(tracking_uri, run_id, result.test_macro_f1, test_metric)
    if not register_as:
        return result
    if registered_alias is None:
        result.registered_version = register_run_model(
            tracking_uri, run_id, register_as, alias=CANDIDATE,
            tags=version_tags(config_name, val_macro_f1, result.test_macro_f1))
    elif result.test_macro_f1 is not None:
        version = alias_version(tracking_uri, register_as, registered_alias)
        if version is not None:
            tag_version(tracking_uri, register_as, version, {TEST_MACRO_F1_TAG: f"{result.test_macro_f1:.4f}"})
    return result


def record_gate_closed(model_dir: str | Path, evaluation_dir: str | Path, *, tracking_uri: str | None = None) -> str:
    """The pipeline's gate closed: tag the model's MLflow run with why no submission was written.

    Returns:
        The reason, as evaluate worded it (e.g. "macro-F1 0.4120 < gate 0.9000").
    """
    reason = closed_gate_reason(evaluation_dir)
    log_submission_skipped(ModelDir(model_dir).run_info(), reason, tracking_uri=tracking_uri)
    return reason
