"""A sweep through kfp.local: three label-smoothing factors, one parent run, a ranked leaderboard."""

import json
from pathlib import Path

import mlflow
import pytest
from conftest import TINY_PIPELINE

from longtail.pipelines.local import run_sweep_local
from longtail.sweep_plan import load_sweep

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(digits_lt, tmp_path_factory):
    digits = digits_lt
    configs = load_sweep([REPO / "experiments" / "demo.yaml"], ["train.label_smoothing.factor=0.2,0.1,0.01"],
                         TINY_PIPELINE + ["train.epochs=1"])
    result = run_sweep_local(configs, str(digits / "train"), str(digits / "test"), labels=digits / "test_labels.csv",
                             home=tmp_path_factory.mktemp("home"), parallelism=2, register_as="digits-best")
    return result


def test_three_children_under_one_parent(sweep):
    client = mlflow.MlflowClient(tracking_uri=sweep.tracking_uri)
    parent = client.get_run(sweep.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{sweep.parent_run_id}'")
    assert len(children) == 3
    assert {c.data.params["train.label_smoothing.factor"] for c in children} == {"0.2", "0.1", "0.01"}
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}


def test_leaderboard_has_three_rows_in_macro_f1_order_and_the_differing_knob(sweep):
    lines = [line for line in sweep.leaderboard.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(lines) == 3
    header = next(line for line in sweep.leaderboard.splitlines() if line.startswith("| #"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "train.label_smoothing.factor" in cols and "name" not in cols
    f1 = [float(line.strip("|").split("|")[cols.index("macro-F1")]) for line in lines]
    assert f1 == sorted(f1, reverse=True)


def test_best_model_is_registered_and_its_submission_scored(sweep):
    client = mlflow.MlflowClient(tracking_uri=sweep.tracking_uri)
    versions = client.search_model_versions("name = 'digits-best'")
    assert len(versions) == 1 and versions[0].run_id == sweep.best_run_id
    assert sweep.submission is not None and sweep.submission.is_file()
    assert 0.0 <= sweep.test_macro_f1 <= 1.0


def test_the_champion_alias_version_tags_and_datasets_are_in_mlflow(sweep):
    client = mlflow.MlflowClient(tracking_uri=sweep.tracking_uri)
    champion = client.get_model_version_by_alias("digits-best", "champion")
    assert champion.run_id == sweep.best_run_id
    assert all(v.current_stage in ("None", None) for v in client.search_model_versions("name = 'digits-best'"))
    best = client.get_run(sweep.best_run_id)
    assert champion.tags["config"] == best.data.params["name"]
    assert float(champion.tags["val_macro_f1"]) == pytest.approx(best.data.metrics["eval_macro_f1"], abs=1e-4)
    assert float(champion.tags["test_macro_f1"]) == pytest.approx(sweep.test_macro_f1, abs=1e-4)
    contexts = {d.tags[0].value: d.dataset for d in best.inputs.dataset_inputs}
    assert set(contexts) == {"training", "validation", "test"}
    assert contexts["training"].digest == best.data.tags["data.fingerprint"].split(":")[1][:32]
    assert json.loads(contexts["test"].profile)["num_classes"] == 10
    assert json.loads(contexts["training"].source)["uri"].endswith("/train")


def test_the_sweep_runs_say_what_they_are(sweep):
    client = mlflow.MlflowClient(tracking_uri=sweep.tracking_uri)
    parent = client.get_run(sweep.parent_run_id)
    assert "train.label_smoothing.factor" in parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["kfp.pipeline_name"] == "longtail-sweep"
    child = client.get_run(sweep.best_run_id)
    assert child.data.tags["kfp.run_id"] in parent.data.tags["kfp.run_id"]
    assert child.data.tags["mlflow.source.name"] == "longtail pipeline: train step"
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert sweep.log_path.is_file() and "Executing task" in sweep.log_path.read_text()
