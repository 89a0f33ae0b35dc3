"""The whole training pipeline through kfp.local on real (digits-lt) data, tracked in MLflow."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import TINY_PIPELINE

from longtail.errors import LongtailError
from longtail.pipelines.local import run_local
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.store import default_tracking_uri

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(digits_lt):
    return digits_lt


def run(digits, home, extra=()):
    return run_local(REPO / "experiments" / "demo.yaml", str(digits / "train"), str(digits / "test"),
                     labels=digits / "test_labels.csv", overrides=TINY_PIPELINE + list(extra), home=home)


@pytest.fixture(scope="module")
def open_gate(digits, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # samples within a seconds-long training
        return run(digits, tmp_path_factory.mktemp("home"))


def test_every_step_ran_and_left_its_outputs(open_gate):
    run_dir = open_gate.model_dir.parents[1]
    steps = {p.name for p in run_dir.iterdir() if p.is_dir()}
    assert {"resolve-config", "ingest", "ingest-2", "weights", "train", "evaluate", "submit"} <= steps
    assert "skip-submission" not in steps
    assert (open_gate.model_dir / "model.keras").is_file()
    assert (open_gate.model_dir / "preprocessing.json").is_file()


def test_the_mlflow_run_holds_everything(open_gate):
    client = mlflow.MlflowClient(tracking_uri=open_gate.tracking_uri)
    run = client.get_run(open_gate.run_id)
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.name"] == "small_cnn"
    assert len(client.get_metric_history(open_gate.run_id, "val_macro_f1")) == 2
    assert 0.0 <= run.data.metrics["eval_macro_f1"] <= 1.0
    assert run.data.metrics["test_macro_f1"] == pytest.approx(open_gate.test_macro_f1)
    artifacts = set()
    stack = [""]
    while stack:
        for item in client.list_artifacts(open_gate.run_id, stack.pop() or None):
            (stack.append(item.path) if item.is_dir else artifacts.add(item.path))
    names = {Path(a).name for a in artifacts}
    assert {"curves.png", "confusion_matrix.png", "per_class_f1.png", "report.txt"} <= names, names
    assert any(a.endswith(".csv") and "submission" in a for a in artifacts), artifacts
    mlflow.set_tracking_uri(open_gate.tracking_uri)
    model = mlflow.keras.load_model(f"runs:/{open_gate.run_id}/model")
    assert model.output_shape[-1] == 10


def test_submission_has_one_row_per_test_image(open_gate, digits):
    # The pipeline's submission output: the gate-open branch's CSV.
    assert open_gate.submission == open_gate.model_dir.parents[1] / "submit" / "submission"
    with open(open_gate.submission) as f:
        rows = list(csv.DictReader(f))
    n_test = len(list((digits / "test").glob("*.png")))
    assert len(rows) == n_test and len({r["id"] for r in rows}) == n_test
    assert set(rows[0]) == {"id", "label"}


def test_a_gate_above_reach_skips_submission_and_says_why(digits, tmp_path):
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-m", "longtail.cli", "run", str(REPO / "experiments" / "demo.yaml"),
                           "--data", str(digits / "train"), "--test", str(digits / "test"),
                           "--labels", str(digits / "test_labels.csv"), "--home", str(home),
                           *sum((["--set", s] for s in [*TINY_PIPELINE, "evaluate.min_macro_f1=1.0"]), [])],
                          env={k: v for k, v in os.environ.items() if k != TRACKING_URI_ENV},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "submission:      skipped (the evaluation gate closed; see the run's gate_reason tag)" in proc.stdout
    assert "test macro-F1" not in proc.stdout, "a skipped submission is never scored"
    (run_dir,) = [d for d in (home / "pipeline-root").iterdir() if d.is_dir()]
    assert not (run_dir / "submit").exists()
    # The pipeline's submission output is the closed branch's note, saying why.
    note = (run_dir / "skip-submission" / "submission").read_text()
    run_id, tracking_uri = re.search(r"MLflow run:\s+(\w+)\s+\((\S+)\)", proc.stdout).groups()
    assert tracking_uri == default_tracking_uri(home)
    tags = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags
    assert tags["eval_gate"] == "failed" and tags["submission"] == "skipped"
    assert "evaluate.min_macro_f1 1.0000" in tags["gate_reason"] and "macro-F1" in tags["gate_reason"]
    assert tags["submission_skipped_because"] == tags["gate_reason"]
    assert note == f"No submission: the evaluation gate closed ({tags['gate_reason']}).\n"


def test_the_run_explains_itself_in_mlflow(open_gate):
    client = mlflow.MlflowClient(tracking_uri=open_gate.tracking_uri)
    run = client.get_run(open_gate.run_id)
    tags = run.data.tags
    assert tags["mlflow.note.content"].startswith("**demo**: small_cnn on 16 px images, 2 epochs")
    assert "`--set train.epochs=2`" in tags["mlflow.note.content"]
    assert tags["mlflow.source.name"] == "longtail pipeline: train step"
    assert tags["kfp.pipeline_name"] == "longtail-training"
    assert tags["kfp.run_id"] == open_gate.model_dir.parents[1].name
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert inputs["training"].name.endswith("/train") and inputs["test"].name.endswith("/test")
    assert json.loads(inputs["validation"].profile)["num_rows"] == int(run.data.params["data.val_samples"])
    assert any(k.startswith("system/cpu") for k in run.data.metrics)
    assert run.info.experiment_id == open_gate.experiment_id


def test_the_full_log_is_in_a_file_in_the_pipeline_root(open_gate):
    log = open_gate.log_path.read_text()
    assert open_gate.log_path.parent == open_gate.model_dir.parents[2]
    assert "Executing task 'train'" in log and "demo epoch 2/2: loss" in log


def test_a_failing_step_is_one_line_with_its_cause_and_the_log(digits, tmp_path):
    # Named like images but none decodes: the listing checked before the run passes it, the step fails.
    broken = tmp_path / "broken-test"
    broken.mkdir()
    (broken / "0.png").write_bytes(b"not a png")
    with pytest.raises(LongtailError) as err:
        run_local(REPO / "experiments" / "demo.yaml", str(digits / "train"), str(broken),
                  overrides=TINY_PIPELINE, home=tmp_path / "home")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("step 'ingest-2' failed: ") and f"no image in {broken} could be decoded" in message
    assert "full log: " in message and message.rstrip(")").endswith(".log")
    # A user's error fails once: the step is not retried (docs/safety.md "Fail once").
    log = Path(message.rstrip(")").rsplit("full log: ", 1)[1]).read_text()
    assert log.count("Executing task 'ingest-2'") == 1
