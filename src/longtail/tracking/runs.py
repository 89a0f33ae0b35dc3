"""The MLflow run of one training: params, per-epoch metrics, curves, the model and its preprocessing."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from longtail.config import config_to_dict, flatten
from longtail.credentials import redact
from longtail.errors import LongtailError
from longtail.model_dir import PREPROCESSING_FILE
from longtail.tracking import served  # the module itself: MLflow's Model.log takes the flavour module
from longtail.tracking.inputs import SplitDataset, log_datasets
from longtail.tracking.names import (
    DATA_CLASSES_PARAM,
    DATA_FINGERPRINT_TAG,
    DATA_IMAGE_SIZE_TAG,
    DATA_TRAIN_SAMPLES_PARAM,
    DATA_VAL_SAMPLES_PARAM,
    DESCRIPTION_TAG,
    KFP_TASK_RUN_TAG,
    MODEL_ARTIFACT,
    MODEL_NAME_TAG,
    PARENT_RUN_TAG,
    POSTHOC_BEST_TAU,
    POSTHOC_GAIN_HIGH,
    POSTHOC_GAIN_LOW,
    POSTHOC_TAU,
    STEP_TAG,
    VAL_MACRO_F1_AFTER_POSTHOC,
    VAL_MACRO_F1_BEFORE_POSTHOC,
    WEIGHTS_MAX_PARAM,
    WEIGHTS_MIN_PARAM,
)
from longtail.tracking.store import (
    check_tracking_reachable,
    ensure_experiment,
    env_run_id_hidden,
    fluent_tracking_uri,
    git_commit,
    source_tags,
)

log = logging.getLogger(__name__)

# MLflow accepts at most 100 params/metrics per log_batch call.
BATCH_LIMIT = 100
# Seconds between system-metrics samples (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it).
SYSTEM_METRICS_INTERVAL_S = 5.0
# MLflow's own switch; longtail logs system metrics unless it is set to false/0.
SYSTEM_METRICS_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
# How long finish() waits for a store that stopped answering (a database restarting after a crash)
# to record the run's end, so that it is not left RUNNING; tries FINISH_RETRY_S apart.
FINISH_PATIENCE_S = 60.0
FINISH_RETRY_S = 2.0


def system_metrics_enabled(environ: Any) -> bool:
    """On unless MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING is false/0/no/off (read at an entry point)."""
    return str(environ.get(SYSTEM_METRICS_ENV, "true")).strip().lower() not in ("false", "0", "no", "off")


class TrainingRun:
    """One MLflow run, written through MlflowClient (no global active-run state)."""

    def __init__(self, tracking_uri: str, experiment: str, run_id: str) -> None:
        import mlflow

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_id = run_id
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)

    @contextlib.contextmanager
    def store_errors(self) -> Iterator[None]:
        """The store failing mid-run (a server or its database gone) as one line naming the store.

        Raises:
            LongtailError: in place of MLflow's exception or the HTTP client's, credentials hidden.
        """
        import requests
        from mlflow.exceptions import MlflowException

        try:
            yield
        except (MlflowException, requests.RequestException) as e:
            reason = redact(" ".join(str(getattr(e, "message", None) or e).split()))
            raise LongtailError(
                f"MLflow tracking store {redact(self.tracking_uri)} failed during run {self.run_id}: {reason}; "
                "check the server and its database, then run again"
            ) from None

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params (values as strings; None as 'null')."""
        from mlflow.entities import Param

        items = [Param(k, "null" if v is None else str(v)) for k, v in sorted(params.items())]
        with self.store_errors():
            for i in range(0, len(items), BATCH_LIMIT):
                self.client.log_batch(self.run_id, params=items[i: i + BATCH_LIMIT])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log one epoch's metrics at `step` (the 0-based epoch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())]
        with self.store_errors():
            for i in range(0, len(items), BATCH_LIMIT):
                self.client.log_batch(self.run_id, metrics=items[i: i + BATCH_LIMIT])

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags (values as strings)."""
        with self.store_errors():
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one local file."""
        with self.store_errors():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_keras_model(self, model: Any, input_example: Any, extra_files: list[Path]) -> str:
        """Log the model (flavours keras and python_function, tracking/served.py), plus `extra_files`.

        The Keras flavour is `model` with its tensor signature; the python_function flavour is
        longtail's served model (longtail.served_model), which reads the model directory that
        preprocessing.json in `extra_files` comes from: raw images in, class names and probabilities
        out, as `longtail predict` computes them. The signature and input example are the latter's.
        MLflow 3 stores it as a LoggedModel of this run (`runs:/<run>/model` resolves to it).

        Args:
            input_example: a float32 batch (1, H, W, 3) used only to infer the Keras signature.
            extra_files: put beside the MLmodel file (preprocessing.json) and at the run's top level.

        Returns:
            The model's URI (models:/<model id>).
        """
        import keras
        import mlflow
        from mlflow.models import Model

        model_dir = next((Path(p).parent for p in extra_files if Path(p).name == PREPROCESSING_FILE), None)
        if model_dir is None:
            raise LongtailError(f"log_keras_model needs the model directory's {PREPROCESSING_FILE} among extra_files")
        # Explicit requirements: inferring them would load the model again in a subprocess.
        requirements = [f"keras=={keras.__version__}", f"tensorflow=={_tf_version()}"]
        with self.store_errors(), fluent_tracking_uri(self.tracking_uri), env_run_id_hidden(), \
                mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            # No serving check at log time (it would load the network a second time in every training);
            # tests/integration/test_champion_serving.py serves a logged model.
            info = Model.log(None, served, name=MODEL_ARTIFACT, flavor_name="python_function", keras_model=model,
                             tensor_example=input_example, model_dir=model_dir, pip_requirements=requirements,
                             validate_serving_input=False)
        for path in extra_files:
            with self.store_errors():
                self.client.log_model_artifact(info.model_id, str(path))
            self.log_artifact(path)
        return info.model_uri

    def log_datasets(self, datasets: list[SplitDataset]) -> None:
        """Record the splits this run read as its dataset inputs (the UI's Datasets column)."""
        with self.store_errors():
            log_datasets(self.tracking_uri, self.run_id, datasets)

    def system_metrics(self, enabled: bool = True, resumed: bool = False) -> Any:
        """A started MLflow SystemMetricsMonitor on this run (CPU, memory, disk, network; GPU where
        pynvml finds one), or None when disabled; stop it with `.finish()` before finishing the run."""
        if not enabled:
            return None
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                       resume_logging=resumed, tracking_uri=self.tracking_uri)
        monitor.start()
        return monitor

    def finish(self, status: str = "FINISHED", patience_s: float = FINISH_PATIENCE_S) -> None:
        """Mark the run FINISHED or FAILED, trying again for up to `patience_s` while the store does not
        answer (its database restarting), so that a run ended by the store's failure ends FAILED, not RUNNING.

        Raises:
            LongtailError: FINISHED could not be recorded in time. A FAILED that cannot be is logged
                instead: the error that failed the run is the one to show.
        """
        deadline = time.monotonic() + patience_s
        while True:
            try:
                with self.store_errors():
                    self.client.set_terminated(self.run_id, status=status)
                return
            except LongtailError as e:
                if time.monotonic() + FINISH_RETRY_S > deadline:
                    if status != "FAILED":
                        raise
                    log.warning("MLflow run %s is left RUNNING, not marked FAILED: %s", self.run_id, e)
                    return
                time.sleep(FINISH_RETRY_S)


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
    task_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> tuple[TrainingRun, bool]:
    """Create the training's run, or reopen `resume_run_id`.

    The new run nests under `parent_run_id` (a sweep), else under `task_run_id` (the run KFP's
    MLflow integration opened for this task, MLFLOW_RUN_ID) when this store holds it, and lives in
    its parent's experiment so the UI shows it folded under the parent; with neither it is a
    top-level run of `experiment`.

    Returns:
        (the run, whether it was resumed).

    Raises:
        LongtailError: the server is unreachable, the run to resume is gone, or `parent_run_id`
            does not exist at `tracking_uri`.
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
        run_tags = dict(tags or {})
        parent = nesting_parent(client, tracking_uri, parent_run_id, task_run_id)
        if parent is not None:
            experiment_id = parent.info.experiment_id
            run_tags[PARENT_RUN_TAG] = parent.info.run_id
        if task_run_id:
            run_tags[KFP_TASK_RUN_TAG] = task_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
        return TrainingRun(tracking_uri, experiment, run.info.run_id), False
    except MlflowException as e:
        raise LongtailError(
            f"MLflow at {redact(tracking_uri)} refused to start a run: {redact(e.message)}"
        ) from None


def nesting_parent(client: Any, tracking_uri: str, parent_run_id: str | None, task_run_id: str | None) -> Any:
    """The run a new run nests under: `parent_run_id` (which must exist), else the orchestrator's task
    run when this store holds it, else None.

    KFP's MLflow plugin sets MLFLOW_RUN_ID in every task, but MLFLOW_TRACKING_URI only with
    injectUserEnvVars; a task run on another MLflow server is noted (kfp.task_run_id), not nested under.
    """
    from mlflow.exceptions import MlflowException

    if parent_run_id:
        return existing_parent_run(client, parent_run_id, tracking_uri)
    if task_run_id:
        try:
            return client.get_run(task_run_id)
        except MlflowException:
            log.warning("MLFLOW_RUN_ID %s (the orchestrator's run for this task) is not in the tracking store %s: "
                        "opening a top-level run tagged %s", task_run_id, tracking_uri, KFP_TASK_RUN_TAG)
    return None


def existing_parent_run(client: Any, run_id: str, tracking_uri: str) -> Any:
    """The parent run a new run nests under; a clear error when the store does not hold it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        raise LongtailError(
            f"MLflow run {run_id} (the parent to nest under) is not in the tracking store "
            f"{redact(tracking_uri)}; set MLFLOW_TRACKING_URI to the server that holds it"
        ) from e


def epoch_logger(run: TrainingRun) -> Any:
    """A Keras callback logging every number in each epoch's logs to `run`, step = epoch."""
    import keras

    class _EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            run.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

    return _EpochLogger()


def describe_experiment(config: Any) -> str:
    """The run description (mlflow.note.content): what the experiment trains, in one paragraph."""
    t, w = config.train, config.weights
    lr = t.lr.schedule + (f" from {t.lr.initial:g}" if t.lr.schedule != "step" else "")
    smoothing = (f"label smoothing {t.label_smoothing.factor:g} in the {t.label_smoothing.mode}"
                 if t.label_smoothing.factor else "no label smoothing")
    weights = "no class weights" if w.scheme == "none" else f"{w.scheme} class weights"
    return (f"**{config.name}**: {config.model.name} on {config.data.image_size} px images, "
            f"{t.epochs} epochs of {t.optimizer.name} (LR {lr}), {weights}, {smoothing}, "
            f"preprocess {config.preprocess.scale}.")


def training_run_tags(config: Any, source: str, commit: str | None) -> dict[str, str]:
    """Tags a training run starts with: its description and where it came from."""
    return {DESCRIPTION_TAG: describe_experiment(config), **source_tags(source, commit)}


def start_experiment_run(tracking_uri: str, config: Any, *, source: str, parent_run_id: str | None = None,
                         resume_run_id: str | None = None, task_run_id: str | None = None,
                         tags: dict[str, str] | None = None) -> tuple[TrainingRun, bool]:
    """start_training_run for an experiment config: named after it, described, tagged with this commit
    (and with `tags`: a search trial's study and number)."""
    return start_training_run(tracking_uri, config.experiment, config.name, parent_run_id=parent_run_id,
                              resume_run_id=resume_run_id, task_run_id=task_run_id,
                              tags={**training_run_tags(config, source, git_commit()), **(tags or {})})


def log_training_facts(run: TrainingRun, config: Any, train_info: Any, val_info: Any,
                       class_weights: list[float] | None) -> None:
    """The resolved config as params, plus the dataset facts the log wrote by hand."""
    params = flatten(config_to_dict(config))
    params.update({
        DATA_CLASSES_PARAM: len(train_info.class_names),
        DATA_TRAIN_SAMPLES_PARAM: train_info.n,
        DATA_VAL_SAMPLES_PARAM: val_info.n,
        WEIGHTS_MIN_PARAM: min(class_weights) if class_weights else 1.0,
        WEIGHTS_MAX_PARAM: max(class_weights) if class_weights else 1.0,
    })
    run.log_params(params)
    run.set_tags({
        STEP_TAG: "train",
        DATA_FINGERPRINT_TAG: train_info.source_fingerprint,
        DATA_IMAGE_SIZE_TAG: train_info.image_size,
        MODEL_NAME_TAG: config.model.name,
    })


def log_posthoc_choice(run: TrainingRun, tau: float, val_macro_f1_before: float, val_macro_f1_after: float,
                       step: int, best_tau: float = 0.0, gain_interval: tuple[float, float] | None = None) -> None:
    """The post-hoc logit adjustment chosen on the val split, val macro-F1 before and after it, the
    tau best on val and (when that is > 0) the paired 95% interval of its gain over tau 0."""
    metrics = {POSTHOC_TAU: tau, POSTHOC_BEST_TAU: best_tau, VAL_MACRO_F1_BEFORE_POSTHOC: val_macro_f1_before,
               VAL_MACRO_F1_AFTER_POSTHOC: val_macro_f1_after}
    if gain_interval is not None:
        metrics |= {POSTHOC_GAIN_LOW: gain_interval[0], POSTHOC_GAIN_HIGH: gain_interval[1]}
    run.log_metrics(metrics, step=step)


def append_description(tracking_uri: str, run_id: str, text: str) -> None:
    """Add a paragraph to a run's description (e.g. the config file and overrides it came from)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    current = client.get_run(run_id).data.tags.get(DESCRIPTION_TAG, "")
    client.set_tag(run_id, DESCRIPTION_TAG, f"{current}\n\n{text}" if current else text)
