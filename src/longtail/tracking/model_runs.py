"""What evaluate, predict and scoring log into a model's MLflow run (the run its mlflow_run.json names: model_dir.RunInfo)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from longtail.credentials import redact
from longtail.errors import DataError, LongtailError, StorageError
from longtail.model_dir import RunInfo
from longtail.tracking.inputs import log_datasets, split_dataset
from longtail.tracking.names import (
    EVAL_GATE_TAG,
    EVAL_MACRO_F1,
    EVAL_PREFIX,
    EVAL_SPLIT_TAG,
    EVALUATION_ARTIFACTS,
    GATE_FAILED,
    GATE_PASSED,
    GATE_REASON_TAG,
    LB_MINUS_LOCAL,
    LB_SCORE,
    PREDICT_N_ROWS,
    PREDICT_POSTHOC_TAU_TAG,
    PREDICT_SPLIT_TAG,
    PREDICT_TTA_SHIFT_TAG,
    PREDICT_TTA_TAG,
    SUBMISSION_ARTIFACTS,
    SUBMISSION_SKIPPED,
    SUBMISSION_SKIPPED_BECAUSE_TAG,
    SUBMISSION_TAG,
    TEST_MACRO_F1,
)
from longtail.tracking.store import check_tracking_reachable

log = logging.getLogger(__name__)


def log_to_model_run(
    run: RunInfo | None,
    *,
    metrics: dict[str, float] | None = None,
    artifacts: list[tuple[Path, str]] | None = None,
    tags: dict[str, str] | None = None,
    tracking_uri: str | None = None,
) -> str | None:
    """Log metrics, tags and files into a model's training run (its model directory's mlflow_run.json).

    The run may already be finished; MlflowClient logs into it without reopening it, so a
    pipeline's train, evaluate and submit steps all land in one run.

    Args:
        run: the model's run (ModelDir.run_info); None for a model trained without tracking.
        artifacts: (local file, artifact folder) pairs.
        tracking_uri: overrides the URI stored at training time (a pod reaching the MLflow
            server by another name than the trainer did).

    Returns:
        The run id, or None when the model was trained without tracking (nothing is logged).

    Raises:
        StorageError: the tracking server or artifact store refused the write.
    """
    if run is None:
        log.info("the model directory has no mlflow_run.json: not logging to MLflow")
        return None
    import mlflow
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.time import get_current_time_millis

    uri = tracking_uri or run.tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri)
    now = get_current_time_millis()
    try:
        client.log_batch(
            run.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )
        for local, folder in artifacts or []:
            client.log_artifact(run.run_id, str(local), artifact_path=folder)
    except MlflowException as e:
        raise StorageError(
            f"could not log to MLflow run {run.run_id} at {uri}: {e.message}. "
            "Check MLFLOW_TRACKING_URI (or pass --tracking-uri)"
        ) from e
    log.info("logged %d metrics and %d files to MLflow run %s", len(metrics or {}), len(artifacts or []), run.run_id)
    return run.run_id


def log_test_dataset(run: RunInfo | None, test_h5: str | Path, *, n_classes: int,
                     tracking_uri: str | None = None) -> str | None:
    """Record the test split a model predicted as a dataset input (context `test`) of its training run.

    Args:
        run: the model's run (ModelDir.run_info); None: nothing is logged.
        n_classes: how many classes the model predicts (its preprocessing's class names).

    Returns:
        The run id, or None when the model was trained without tracking.
    """
    if run is None:
        return None
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or run.tracking_uri
    try:
        log_datasets(uri, run.run_id, [split_dataset(test_h5, "test", n_classes=n_classes)])
    except MlflowException as e:
        raise StorageError(f"could not log the test dataset to MLflow run {run.run_id} at {uri}: {e.message}") from e
    return run.run_id


def log_evaluation(run: RunInfo | None, metrics: dict[str, float], *, passed: bool, reason: str, split: str,
                   files: list[Path], tracking_uri: str | None = None) -> str | None:
    """Log an evaluation into the model's run: eval_<metric>, the gate and its reason, the report files."""
    return log_to_model_run(
        run,
        metrics={EVAL_PREFIX + k: v for k, v in metrics.items()},
        tags={EVAL_GATE_TAG: GATE_PASSED if passed else GATE_FAILED, GATE_REASON_TAG: reason, EVAL_SPLIT_TAG: split},
        artifacts=[(p, EVALUATION_ARTIFACTS) for p in files],
        tracking_uri=tracking_uri,
    )


def log_submission_skipped(run: RunInfo | None, reason: str, *, tracking_uri: str | None = None) -> str | None:
    """The gate closed: tag the model's run with why no submission was written."""
    return log_to_model_run(run, tags={SUBMISSION_TAG: SUBMISSION_SKIPPED, SUBMISSION_SKIPPED_BECAUSE_TAG: reason},
                            tracking_uri=tracking_uri)


def log_prediction(run: RunInfo | None, submission_csv: Path, *, rows: int, tta: bool, split: str,
                   posthoc_tau: float, tracking_uri: str | None = None, tta_shift: float = 0.0) -> str | None:
    """Log a written submission into the model's run: its rows, how it was predicted, the CSV itself."""
    return log_to_model_run(
        run,
        metrics={PREDICT_N_ROWS: float(rows)},
        tags={PREDICT_TTA_TAG: str(tta).lower(), PREDICT_TTA_SHIFT_TAG: str(tta_shift), PREDICT_SPLIT_TAG: split,
              PREDICT_POSTHOC_TAU_TAG: str(posthoc_tau)},
        artifacts=[(submission_csv, SUBMISSION_ARTIFACTS)],
        tracking_uri=tracking_uri,
    )


def log_test_score(tracking_uri: str, run_id: str, macro_f1: float, metric: str = TEST_MACRO_F1) -> None:
    """Log a submission's macro-F1 against held-out labels on a run (test_macro_f1 by default)."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).log_metric(run_id, metric, macro_f1)


def record_lb(run_id: str, score: float, tracking_uri: str) -> dict[str, Any]:
    """Log a leaderboard score on an MLflow run, next to its local evaluation.

    Logs `lb_score`, and `lb_minus_local` = lb_score - eval_macro_f1 (the run's target-prior
    estimate) when the run has been evaluated, so docs/seed-log.md "EXP7"'s "LB score = local macro-F1 + 0.02"
    becomes a column to compare.

    Returns:
        {"run_id", LB_SCORE, EVAL_MACRO_F1 (or None), LB_MINUS_LOCAL (or None)}.

    Raises:
        DataError: the score is not a number in [0, 1], or the run does not exist at `tracking_uri`.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise DataError(f"leaderboard score must be a number, got {score!r}")
    if not 0.0 <= score <= 1.0:
        raise DataError(f"leaderboard score must be a macro-F1 in [0, 1], got {score}")
    check_tracking_reachable(tracking_uri)  # a failing server is not a missing run
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise LongtailError(f"MLflow tracking store {redact(tracking_uri)} failed to read run "
                                f"{run_id!r}: {' '.join(str(e).split())[:300]}") from e
        raise DataError(
            f"MLflow run {run_id!r} not found at {tracking_uri}: check the run id (mlflow_run.json in the "
            f"model directory) and MLFLOW_TRACKING_URI"
        ) from e
    local = run.data.metrics.get(EVAL_MACRO_F1)
    client.log_metric(run_id, LB_SCORE, float(score))
    diff = None
    if local is not None:
        diff = float(score) - float(local)
        client.log_metric(run_id, LB_MINUS_LOCAL, diff)
    else:
        log.info("run %s has no %s yet: logged %s only (run `longtail evaluate` to compare)", run_id, EVAL_MACRO_F1, LB_SCORE)
    return {"run_id": run_id, LB_SCORE: float(score), EVAL_MACRO_F1: local, LB_MINUS_LOCAL: diff}
