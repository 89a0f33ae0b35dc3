"""Logging evaluation and prediction outputs into the MLflow run a model directory belongs to."""

from __future__ import annotations

import logging
from pathlib import Path

from longtail.errors import StorageError
from longtail.tracking import RunInfo

log = logging.getLogger(__name__)


def log_to_model_run(
    model_dir: str | Path,
    *,
    metrics: dict[str, float] | None = None,
    artifacts: list[tuple[Path, str]] | None = None,
    tags: dict[str, str] | None = None,
    tracking_uri: str | None = None,
) -> str | None:
    """Log metrics, tags and files into the training run recorded in `model_dir/mlflow_run.json`.

    The run may already be finished; MlflowClient logs into it without reopening it, so a
    pipeline's train, evaluate and submit steps all land in one run.

    Args:
        artifacts: (local file, artifact folder) pairs.
        tracking_uri: overrides the URI stored at training time (a pod reaching the MLflow
            server by another name than the trainer did).

    Returns:
        The run id, or None when the model was trained without tracking (nothing is logged).

    Raises:
        StorageError: the tracking server or artifact store refused the write.
    """
    info = RunInfo.load(model_dir)
    if info is None:
        log.info("%s has no mlflow_run.json: not logging to MLflow", model_dir)
        return None
    import mlflow
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.time import get_current_time_millis

    uri = tracking_uri or info.tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri)
    now = get_current_time_millis()
    try:
        client.log_batch(
            info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )
        for local, folder in artifacts or []:
            client.log_artifact(info.run_id, str(local), artifact_path=folder)
    except MlflowException as e:
        raise StorageError(
            f"could not log to MLflow run {info.run_id} at {uri}: {e.message}. "
            "Check MLFLOW_TRACKING_URI (or pass --tracking-uri)"
        ) from e
    log.info("logged %d metrics and %d files to MLflow run %s", len(metrics or {}), len(artifacts or []), info.run_id)
    return info.run_id


def log_test_dataset(model_dir: str | Path, test_h5: str | Path, *, tracking_uri: str | None = None) -> str | None:
    """Record the test split a model predicted as a dataset input (context `test`) of its training run.

    Returns:
        The run id, or None when the model was trained without tracking.
    """
    info = RunInfo.load(model_dir)
    if info is None:
        return None
    from mlflow.exceptions import MlflowException

    from longtail.preprocessing import Preprocessing
    from longtail.tracking import log_datasets, split_dataset

    classes = len(Preprocessing.load(model_dir).class_names)
    uri = tracking_uri or info.tracking_uri
    try:
        log_datasets(uri, info.run_id, [split_dataset(test_h5, "test", n_classes=classes)])
    except MlflowException as e:
        raise StorageError(f"could not log the test dataset to MLflow run {info.run_id} at {uri}: {e.message}") from e
    return info.run_id
