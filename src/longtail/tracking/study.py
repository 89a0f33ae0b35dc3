"""A search's records in MLflow: the study's parent run, its trials' states, its plots and best config.

The parent is a sweep parent (SWEEP_TAG), so `longtail report --sweep ID` and the sweep close-out read
it the same way; its trials are the training runs `longtail trial` starts under it, each tagged with
the study and its trial number (tracking.names STUDY_TAG, TRIAL_NUMBER_TAG).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longtail.tracking.names import (
    DESCRIPTION_TAG,
    EVAL_MACRO_F1,
    EVAL_MACRO_F1_HIGH,
    EVAL_MACRO_F1_LOW,
    LEADERBOARD_FILE,
    SEARCH_PARAM_PREFIX,
    STUDY_PRUNE_AFTER_PARAM,
    STUDY_PRUNER_PARAM,
    STUDY_SAMPLER_PARAM,
    STUDY_TAG,
    STUDY_TRIALS_PARAM,
    SWEEP_PARENT,
    SWEEP_TAG,
    TRIAL_NUMBER_TAG,
    TRIAL_STATE_TAG,
    TRIAL_STOPPED_EPOCH_TAG,
)
from longtail.tracking.store import ensure_experiment, git_commit, source_tags

# An MLflow run's end for each trial state: a pruned trial was stopped on purpose (KILLED).
RUN_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
# The MLflow UI's shared views: an experiment tag with this prefix and a key holds a runs-table state
# (columns, sort, expanded rows), opened by the runs page's `?viewStateShareKey=<key>` (MLflow 3's
# "Share" button writes the same tag). A study's view shows its objective and searched params at once.
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."


def study_view(parent_run_id: str, searched: list[str]) -> dict[str, Any]:
    """The runs-table state of a study: best trial first; the objective, its interval, the searched
    params and each trial's state as columns; the study's parent unfolded."""
    columns = [f"metrics.`{m}`" for m in (EVAL_MACRO_F1, EVAL_MACRO_F1_LOW, EVAL_MACRO_F1_HIGH)]
    columns += [f"params.`{key}`" for key in searched]
    columns += [f"tags.`{tag}`" for tag in (TRIAL_STATE_TAG, TRIAL_STOPPED_EPOCH_TAG)]
    return {"orderByKey": f"metrics.`{EVAL_MACRO_F1}`", "orderByAsc": False, "selectedColumns": columns,
            "runsExpanded": {parent_run_id: True}}


def create_study_run(tracking_uri: str, experiment: str, study: str, space: dict[str, str], *,
                     sampler: str, pruner: str, n_trials: int | None, prune_after: int | None = None) -> str:
    """The study's parent run, with the space, the sampler and the pruner (with the percent of each schedule
    it compares from, when it prunes) as params; returns its id."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp_id = ensure_experiment(experiment, tracking_uri)
    tags = {SWEEP_TAG: SWEEP_PARENT, STUDY_TAG: study, **source_tags("longtail tune", git_commit()),
            DESCRIPTION_TAG: (f"**Search {study}**: {sampler} sampling over {', '.join(space)}, {pruner} pruning"
                              + (f" from {prune_after}% of each schedule" if prune_after is not None else "")
                              + f" on the per-epoch val macro-F1; its child runs are the trials, ranked by "
                              f"{EVAL_MACRO_F1} in {LEADERBOARD_FILE}, pruned ones apart.")}
    run = client.create_run(exp_id, run_name=study, tags=tags)
    client.set_experiment_tag(exp_id, f"{SHARED_VIEW_TAG_PREFIX}{study}",
                              json.dumps(study_view(run.info.run_id, list(space))))
    params = {f"{SEARCH_PARAM_PREFIX}{k}": v for k, v in space.items()}
    params.update({STUDY_SAMPLER_PARAM: sampler, STUDY_PRUNER_PARAM: pruner,
                   STUDY_TRIALS_PARAM: "until stopped" if n_trials is None else str(n_trials)})
    if prune_after is not None:
        params[STUDY_PRUNE_AFTER_PARAM] = str(prune_after)
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def reopen_study_run(tracking_uri: str, run_id: str) -> None:
    """Mark a resumed study's parent run running again."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).update_run(run_id, status="RUNNING")


def trial_runs(tracking_uri: str, parent_run_id: str, number: int | None = None) -> list[Any]:
    """The trial runs under a study's parent (those of one trial number, when given)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    parent = client.get_run(parent_run_id)
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    if number is not None:
        query += f" and tags.`{TRIAL_NUMBER_TAG}` = '{number}'"
    return client.search_runs([parent.info.experiment_id], filter_string=query, max_results=5000)


def record_trial_state(tracking_uri: str, parent_run_id: str, number: int, state: str,
                       stopped_epoch: int | None = None) -> str | None:
    """Tag trial `number`'s run with its state (and the epoch a pruned trial stopped after), and end it
    as RUN_STATUS says; returns its run id (None when the trial never started a run)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    runs = trial_runs(tracking_uri, parent_run_id, number)
    for run in runs:
        client.set_tag(run.info.run_id, TRIAL_STATE_TAG, state)
        if stopped_epoch is not None:
            client.set_tag(run.info.run_id, TRIAL_STOPPED_EPOCH_TAG, str(stopped_epoch))
        if state != "complete" or run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status=RUN_STATUS[state])
    return runs[0].info.run_id if runs else None


def record_study_result(tracking_uri: str, parent_run_id: str, files: list[Path], metrics: dict[str, float],
                        tags: dict[str, str]) -> None:
    """Log the study's files (leaderboard, plots, best config), its figures and tags to the parent run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for path in files:
        client.log_artifact(parent_run_id, str(path))
    for key, value in metrics.items():
        client.log_metric(parent_run_id, key, value)
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, value)


def end_study_run(tracking_uri: str, parent_run_id: str) -> str:
    """Mark the study's parent run finished; returns its experiment's id (for the UI's address)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    client.set_terminated(parent_run_id)
    return client.get_run(parent_run_id).info.experiment_id
