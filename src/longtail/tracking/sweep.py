"""A sweep's parent run in MLflow: created, its children read back, its result recorded, closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longtail.errors import LongtailError
from longtail.tracking.names import (
    BEST_EXPERIMENT_TAG,
    BEST_MACRO_F1,
    BEST_RUN_ID_TAG,
    DESCRIPTION_TAG,
    EVAL_MACRO_F1,
    KFP_TASK_RUN_TAG,
    LARGEST_EFFECT_TAG,
    LEADERBOARD_FILE,
    N_EXPERIMENTS_PARAM,
    PARENT_RUN_TAG,
    REGISTERED_MODEL_TAG,
    SWEEP_KNOBS_TAG,
    SWEEP_PARENT,
    SWEEP_TAG,
)
from longtail.tracking.runs import nesting_parent
from longtail.tracking.store import ensure_experiment, git_commit, source_tags


def create_sweep_run(tracking_uri: str, experiment: str, name: str, n_experiments: int, knobs: list[str], *,
                     task_run_id: str | None = None) -> str:
    """Create the MLflow parent run whose children are the sweep's experiments; returns its id.

    Args:
        knobs: the config keys the experiments differ in (described and tagged on the run).
        task_run_id: the run KFP's MLflow integration opened for this task (MLFLOW_RUN_ID); the
            sweep's run nests under it, in its experiment, when this store holds it.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp_id = ensure_experiment(experiment, tracking_uri)
    tags = {SWEEP_TAG: SWEEP_PARENT, **source_tags("longtail sweep", git_commit()),
            DESCRIPTION_TAG: (f"**Sweep {name}**: {n_experiments} experiments of `{experiment}` that differ in "
                              f"{', '.join(knobs) or 'nothing'}; its child runs are the experiments, ranked "
                              f"by {EVAL_MACRO_F1} in {LEADERBOARD_FILE}.")}
    if task_run_id:
        tags[KFP_TASK_RUN_TAG] = task_run_id
        task_run = nesting_parent(client, tracking_uri, None, task_run_id)
        if task_run is not None:
            exp_id = task_run.info.experiment_id
            tags[PARENT_RUN_TAG] = task_run_id
    run = client.create_run(exp_id, run_name=name, tags=tags)
    client.log_param(run.info.run_id, N_EXPERIMENTS_PARAM, n_experiments)
    client.set_tag(run.info.run_id, SWEEP_KNOBS_TAG, ", ".join(knobs) or "(none)")
    return run.info.run_id


def training_runs(tracking_uri: str, *, experiment: str | None = None, parent_run_id: str | None = None) -> list[Any]:
    """The MLflow training runs of an experiment (sweep parents excluded), or the children of one sweep run.

    Raises:
        LongtailError: the experiment does not exist or holds no training runs.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if parent_run_id:
        parent = client.get_run(parent_run_id)
        exp_ids = [parent.info.experiment_id]
        query = f"tags.{PARENT_RUN_TAG} = '{parent_run_id}'"
    else:
        exp = client.get_experiment_by_name(experiment or "")
        if exp is None:
            raise LongtailError(f"MLflow experiment {experiment!r} not found at {tracking_uri}")
        exp_ids, query = [exp.experiment_id], ""
    runs = client.search_runs(exp_ids, filter_string=query, max_results=5000)
    runs = [r for r in runs if r.data.tags.get(SWEEP_TAG) != SWEEP_PARENT]
    if not runs:
        raise LongtailError(f"no training runs found ({'sweep ' + parent_run_id if parent_run_id else experiment})")
    return runs


def record_sweep_best(tracking_uri: str, parent_run_id: str, leaderboard_md: str | Path, *, best_run_id: str,
                      best_name: str, best_macro_f1: float | None, largest_effect: str | None) -> None:
    """Log the leaderboard file to the parent run, with the best run, its macro-F1 and the largest effect."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    client.log_artifact(parent_run_id, str(leaderboard_md))
    client.log_metric(parent_run_id, BEST_MACRO_F1, best_macro_f1 or 0.0)
    client.set_tag(parent_run_id, BEST_RUN_ID_TAG, best_run_id)
    client.set_tag(parent_run_id, BEST_EXPERIMENT_TAG, best_name)
    if largest_effect:
        client.set_tag(parent_run_id, LARGEST_EFFECT_TAG, largest_effect)


def tag_registered_model(tracking_uri: str, parent_run_id: str, name: str, version: str) -> None:
    """Say on the sweep's parent run which registered-model version its best model became."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).set_tag(parent_run_id, REGISTERED_MODEL_TAG, f"{name} v{version}")


def end_sweep_run(tracking_uri: str, parent_run_id: str) -> None:
    """Mark the sweep's parent run finished."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).set_terminated(parent_run_id)


def best_run_id(tracking_uri: str, parent_run_id: str) -> str:
    """The run a sweep's close-out named best on its parent run ("" before it has run)."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(parent_run_id).data.tags.get(BEST_RUN_ID_TAG, "")
