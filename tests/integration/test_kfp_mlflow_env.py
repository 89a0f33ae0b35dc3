"""KFP's native MLflow integration: a task container that already holds an MLflow run.

With the KFP API server's MLflow plugin on (settings.injectUserEnvVars), each KFP run is an MLflow
parent run, each task a nested run, and the task's container gets MLFLOW_TRACKING_URI,
MLFLOW_EXPERIMENT_ID and MLFLOW_RUN_ID. KFP itself is not here, so this test opens those two runs
the way KFP's API server and driver do (REST create-run with mlflow.parentRunId) and starts
`longtail train` in a process with exactly those variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from test_train_mlflow import digits_lt_splits

from longtail.sweep_run import start_sweep_run
from longtail.tracking.names import KFP_TASK_RUN_TAG

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.name=small_cnn", "model.args={width: 8}", "train.epochs=1", "train.batch_size=32",
        "data.image_size=16", "train.lr.schedule=constant", "train.lr.initial=0.003",
        "train.optimizer.name=adam", "weights.scheme=none"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kfp_runs(tmp_path_factory):
    """A store holding what KFP opens: the pipeline run (parent) and the train task's nested run."""
    root = tmp_path_factory.mktemp("kfp")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("KFP-Default", artifact_location=(root / "mlruns").as_uri())
    pipeline_run = client.create_run(exp_id, run_name="longtail-training-run",
                                     tags={"kfp.pipeline_run_id": "3f0c-run"}).info.run_id
    task_run = client.create_run(exp_id, run_name="train",
                                 tags={"mlflow.parentRunId": pipeline_run}).info.run_id
    return {"root": root, "uri": uri, "experiment_id": exp_id, "pipeline_run": pipeline_run, "task_run": task_run}


def kfp_env(kfp_runs, run_id=None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": kfp_runs["uri"], "MLFLOW_EXPERIMENT_ID": kfp_runs["experiment_id"],
                "MLFLOW_RUN_ID": run_id or kfp_runs["task_run"], "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"})
    return env


def longtail_train(kfp_runs, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    train_h5, val_h5 = digits_lt_splits(kfp_runs["root"])
    cmd = [sys.executable, "-m", "longtail.cli", "train", str(REPO / "experiments" / "demo.yaml"),
           "--train", str(train_h5), "--val", str(val_h5), "--out", str(out)]
    for override in TINY:
        cmd += ["--set", override]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def trained(kfp_runs):
    out = kfp_runs["root"] / "model"
    proc = longtail_train(kfp_runs, out, kfp_env(kfp_runs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "mlflow_run.json").read_text())["run_id"]


def test_the_training_run_nests_under_the_task_run(kfp_runs, trained):
    client = mlflow.MlflowClient(tracking_uri=kfp_runs["uri"])
    run = client.get_run(trained)
    assert trained not in (kfp_runs["task_run"], kfp_runs["pipeline_run"])
    assert run.data.tags["mlflow.parentRunId"] == kfp_runs["task_run"]
    assert run.data.tags[KFP_TASK_RUN_TAG] == kfp_runs["task_run"]
    assert run.info.experiment_id == kfp_runs["experiment_id"]  # folded under the task in the UI
    task = client.get_run(kfp_runs["task_run"])
    assert task.data.tags["mlflow.parentRunId"] == kfp_runs["pipeline_run"]


def test_nothing_is_redirected_into_the_task_run(kfp_runs, trained):
    client = mlflow.MlflowClient(tracking_uri=kfp_runs["uri"])
    task = client.get_run(kfp_runs["task_run"])
    assert task.data.params == {} and task.data.metrics == {} and not task.inputs.dataset_inputs
    assert task.info.status == "RUNNING"  # KFP closes it, not longtail
    run = client.get_run(trained)
    assert len(client.get_metric_history(trained, "val_macro_f1")) == 1
    assert {d.tags[0].value for d in run.inputs.dataset_inputs} == {"training", "validation"}
    assert any(k.startswith("system/") for k in run.data.metrics)
    models = client.search_logged_models(experiment_ids=[kfp_runs["experiment_id"]])
    assert [m.source_run_id for m in models] == [trained]


def test_the_sweep_parent_nests_under_its_task_run(kfp_runs):
    parent = start_sweep_run(kfp_runs["uri"], "longtail-demo", "sweep", [{"name": "a"}, {"name": "b"}],
                             task_run_id=kfp_runs["task_run"])
    run = mlflow.MlflowClient(tracking_uri=kfp_runs["uri"]).get_run(parent)
    assert run.data.tags["mlflow.parentRunId"] == kfp_runs["task_run"]
    assert run.info.experiment_id == kfp_runs["experiment_id"]


def test_a_task_run_on_another_server_is_noted_not_nested_under(kfp_runs, tmp_path):
    """KFP sets MLFLOW_RUN_ID in every task, MLFLOW_TRACKING_URI only with injectUserEnvVars: the task
    run may live on another MLflow server than the one longtail tracks to."""
    missing = "0" * 32
    proc = longtail_train(kfp_runs, tmp_path / "model", kfp_env(kfp_runs, run_id=missing))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"MLFLOW_RUN_ID {missing}" in proc.stderr and "opening a top-level run" in proc.stderr
    run_id = json.loads((tmp_path / "model" / "mlflow_run.json").read_text())["run_id"]
    tags = mlflow.MlflowClient(tracking_uri=kfp_runs["uri"]).get_run(run_id).data.tags
    assert "mlflow.parentRunId" not in tags and tags[KFP_TASK_RUN_TAG] == missing
