"""The MLflow run of one training: params, per-epoch metrics, curves, the model and its preprocessing."""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from longtail.errors import LongtailError
from longtail.tracking import ensure_experiment, redact_credentials

log = logging.getLogger(__name__)

# MLflow accepts at most 100 params/metrics per log_batch call.
BATCH_LIMIT = 100


def check_tracking_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any training, when an MLflow server does not answer.

    Only http(s) URIs are probed (GET /health, bounded by `timeout_s`); a SQLite or file store
    is local and is created on first use.

    Raises:
        LongtailError: naming the URI and how to fix it.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    shown = redact_credentials(tracking_uri)
    # user:password@ is the MLflow client's business (basic auth); /health needs none, and urllib
    # would take the password for part of the host name.
    scheme, netloc, path, _, _ = urllib.parse.urlsplit(tracking_uri)
    url = urllib.parse.urlunsplit((scheme, netloc.rpartition("@")[2], path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status, body = response.status, response.read(64)
    except urllib.error.HTTPError as e:
        status, body = e.code, b""
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = redact_credentials(str(getattr(e, "reason", e)))
        raise LongtailError(
            f"MLflow tracking server {shown} is unreachable ({reason}); start it, fix "
            "MLFLOW_TRACKING_URI, or unset it to use the local SQLite store under .longtail/"
        ) from None
    if status != 200 or body.strip() != b"OK":
        detail = " without MLflow's OK" if status == 200 else ""
        raise LongtailError(
            f"MLflow tracking server {shown} is not healthy: GET /health answered HTTP {status}{detail}; "
            "check the server's log, or fix MLFLOW_TRACKING_URI if another service answers there"
        )


class TrainingRun:
    """One MLflow run, written through MlflowClient (no global active-run state)."""

    def __init__(self, tracking_uri: str, experiment: str, run_id: str) -> None:
        import mlflow

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_id = run_id
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params (values as strings; None as 'null')."""
        from mlflow.entities import Param

        items = [Param(k, "null" if v is None else str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=items[i: i + BATCH_LIMIT])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log one epoch's metrics at `step` (the 0-based epoch)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())]
        for i in range(0, len(items), BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=items[i: i + BATCH_LIMIT])

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags (values as strings)."""
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one local file."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_keras_model(self, model: Any, input_example: Any, extra_files: list[Path]) -> str:
        """Log the model with the Keras flavour and an inferred tensor signature, plus `extra_files`.

        MLflow 3 stores it as a LoggedModel of this run (`runs:/<run>/model` resolves to it).

        Args:
            input_example: a float32 batch (1, H, W, 3) used only to infer the signature.
            extra_files: put beside the MLmodel file (preprocessing.json) and at the run's top level.

        Returns:
            The model's URI (models:/<model id>).
        """
        import keras
        import mlflow
        import numpy as np
        from mlflow.models import infer_signature

        signature = infer_signature(input_example, np.asarray(model(input_example, training=False)))
        # Explicit requirements: inferring them would load the model again in a subprocess.
        requirements = [f"keras=={keras.__version__}", f"tensorflow=={_tf_version()}"]
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
                info = mlflow.keras.log_model(model, name="model", signature=signature,
                                              pip_requirements=requirements)
        finally:
            mlflow.set_tracking_uri(previous)
        for path in extra_files:
            self.client.log_model_artifact(info.model_id, str(path))
            self.log_artifact(path)
        return info.model_uri

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED or FAILED."""
        self.client.set_terminated(self.run_id, status=status)


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def start_training_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    *,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> tuple[TrainingRun, bool]:
    """Create the training's run (nested under `parent_run_id`), or reopen `resume_run_id`.

    Returns:
        (the run, whether it was resumed).

    Raises:
        LongtailError: the server is unreachable or the run to resume is gone.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    check_tracking_reachable(tracking_uri)
    try:
        experiment_id = ensure_experiment(experiment, tracking_uri)
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        if resume_run_id:
            try:
                client.get_run(resume_run_id)
                client.update_run(resume_run_id, status="RUNNING")
                log.info("resuming MLflow run %s", resume_run_id)
                return TrainingRun(tracking_uri, experiment, resume_run_id), True
            except MlflowException:
                log.warning("MLflow run %s to resume is gone; starting a new run", resume_run_id)
        tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        return TrainingRun(tracking_uri, experiment, run.info.run_id), False
    except MlflowException as e:
        raise LongtailError(
            f"MLflow at {redact_credentials(tracking_uri)} refused to start a run: {redact_credentials(e.message)}"
        ) from None


def epoch_logger(run: TrainingRun) -> Any:
    """A Keras callback logging every number in each epoch's logs to `run`, step = epoch."""
    import keras

    class _EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            run.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

    return _EpochLogger()
