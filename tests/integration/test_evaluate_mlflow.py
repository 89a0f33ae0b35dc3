"""evaluate, predict, score and lb against a real MLflow SQLite store: everything lands in the training run."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

# The digits data and tiny-model builders are shared with the unit tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from digits_models import make_digits, train_model_dir  # noqa: E402

from longtail.cli import main  # noqa: E402
from longtail.errors import DataError  # noqa: E402
from longtail.evaluation import evaluate  # noqa: E402
from longtail.model_dir import RunInfo  # noqa: E402
from longtail.prediction import predict  # noqa: E402
from longtail.scoring import macro_f1_of  # noqa: E402
from longtail.splits import read_info  # noqa: E402
from longtail.tracking.model_runs import record_lb  # noqa: E402
from longtail.tracking.store import ensure_experiment  # noqa: E402

EVAL_FILES = {"confusion_matrix.png", "metrics.json", "per_class_f1.png", "report.md", "report.txt"}
# Every test here evaluates a model the module fixture trains.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    data = make_digits(root / "data")
    model_dir = train_model_dir(data, root / "model", scale="mean_subtraction")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = client.create_run(ensure_experiment("longtail-tests", uri)).info.run_id
    client.set_terminated(run_id)  # training has finished before evaluate runs
    RunInfo(tracking_uri=uri, experiment="longtail-tests", run_id=run_id).save(model_dir)
    return data, model_dir, uri, run_id


def artifact_names(client, run_id, folder):
    return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}


def test_evaluate_predict_score_and_lb_land_in_the_training_run(tracked, tmp_path, capsys):
    data, model_dir, uri, run_id = tracked
    client = mlflow.MlflowClient(tracking_uri=uri)

    result = evaluate(model_dir, data.val_h5, tmp_path / "eval", min_macro_f1=0.5)
    assert result.mlflow_run_id == run_id
    run = client.get_run(run_id)
    assert run.data.metrics["eval_macro_f1"] == pytest.approx(result.macro_f1)
    # The val classes differ in size: eval_macro_f1 is the balanced estimate, the plain one sits beside it.
    labels = read_info(data.val_h5).labels
    pred = np.array(json.loads((tmp_path / "eval" / "metrics.json").read_text())["confusion_matrix"])
    assert result.target_prior == "balanced" and len(set(np.bincount(labels))) > 1
    assert result.macro_f1 == pytest.approx(macro_f1_of(pred, balanced=True))
    assert run.data.metrics["eval_macro_f1_plain"] == pytest.approx(macro_f1_of(pred, balanced=False))
    assert run.data.metrics["eval_macro_f1_low"] <= result.macro_f1 <= run.data.metrics["eval_macro_f1_high"]
    assert result.passed == (result.macro_f1 >= 0.5)  # the gate reads the balanced figure
    assert run.data.metrics["eval_accuracy"] == pytest.approx(result.accuracy)
    assert run.data.metrics["eval_gate_passed"] == 1.0
    assert run.data.tags["eval_gate"] == "passed" and run.data.tags["gate_reason"] == result.reason
    assert artifact_names(client, run_id, "evaluation") == EVAL_FILES

    csv = tmp_path / "submission.csv"
    assert predict(model_dir, data.test_h5, csv).mlflow_run_id == run_id
    assert artifact_names(client, run_id, "submission") == {"submission.csv"}

    assert main(["score", str(csv), str(data.test_labels_csv)]) == 0
    out = capsys.readouterr().out
    assert "macro avg" in out and "macro-F1 0." in out

    assert main(["lb", run_id, "0.95", "--tracking-uri", uri]) == 0
    assert "LB - local = " in capsys.readouterr().out
    metrics = client.get_run(run_id).data.metrics
    assert metrics["lb_score"] == 0.95
    assert metrics["lb_minus_local"] == pytest.approx(0.95 - result.macro_f1)


def test_tracking_uri_argument_overrides_the_stored_one(tracked, tmp_path):
    data, model_dir, uri, run_id = tracked
    moved = tmp_path / "model"
    shutil.copytree(model_dir, moved)
    # As seen from another machine: the stored URI points at a store that is not there.
    RunInfo(tracking_uri=f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}", experiment="x", run_id=run_id).save(moved)
    predict(moved, data.test_h5, tmp_path / "sub.csv", tracking_uri=uri, tta=True, tta_shift=0.07)
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.tags["predict_tta"] == "true" and run.data.tags["predict_tta_shift"] == "0.07"
    assert not (tmp_path / "elsewhere").exists()


def test_lb_on_a_run_without_evaluation_logs_only_the_score(tracked):
    _, _, uri, _ = tracked
    client = mlflow.MlflowClient(tracking_uri=uri)
    bare = client.create_run(ensure_experiment("longtail-tests", uri)).info.run_id
    r = record_lb(bare, 0.7, uri)
    assert r["lb_minus_local"] is None and r["eval_macro_f1"] is None
    assert client.get_run(bare).data.metrics == {"lb_score": 0.7}


def test_lb_on_an_unknown_run_is_a_clear_error(tracked, capsys):
    _, _, uri, _ = tracked
    with pytest.raises(DataError, match=r"MLflow run 'deadbeef' not found at sqlite:///"):
        record_lb("deadbeef", 0.7, uri)
    assert main(["lb", "deadbeef", "0.7", "--tracking-uri", uri]) == 2
    assert "longtail lb: error: MLflow run 'deadbeef' not found" in capsys.readouterr().err
