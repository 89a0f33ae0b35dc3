"""What runs and experiments say about themselves, the registry's aliases, and MLFLOW_RUN_ID kept in its place."""

import os

import mlflow
import pytest

from longtail.cli import main
from longtail.config import config_from_dict
from longtail.errors import LongtailError
from longtail.tracking.inputs import dataset_name
from longtail.tracking.names import CHAMPION, CUSTOM_MODEL_DEVELOPMENT, DESCRIPTION_TAG, EXPERIMENT_KIND_TAG
from longtail.tracking.registry import promote
from longtail.tracking.runs import describe_experiment, system_metrics_enabled
from longtail.tracking.store import ensure_experiment, env_run_id_hidden, runs_page_url, ui_hint


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating MLflow's tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_experiments_open_on_training_runs_with_a_description(store):
    client = mlflow.MlflowClient(tracking_uri=store)
    exp_id = ensure_experiment("longtail-demo", store)
    tags = client.get_experiment(exp_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == CUSTOM_MODEL_DEVELOPMENT and "macro-F1" in tags[DESCRIPTION_TAG]
    client.set_experiment_tag(exp_id, DESCRIPTION_TAG, "my own words")
    assert ensure_experiment("longtail-demo", store) == exp_id
    assert client.get_experiment(exp_id).tags[DESCRIPTION_TAG] == "my own words"


def test_a_tag_set_by_a_concurrent_writer_is_not_an_error(store):
    """PostgreSQL refuses the second insert of an experiment tag that two trainings started together
    both found missing; SQLite replaces it. The refusal is injected here after a real second writer
    has set the tag (the real race runs in tests/integration/test_tracking_postgres.py)."""
    from longtail.tracking.store import set_experiment_facts

    real = mlflow.MlflowClient(tracking_uri=store)
    exp_id = real.create_experiment("raced")

    class RacedClient:
        def get_experiment(self, experiment_id):
            return real.get_experiment(experiment_id)

        def set_experiment_tag(self, experiment_id, key, value):
            real.set_experiment_tag(experiment_id, key, value)  # the other writer, first
            raise mlflow.exceptions.MlflowException("duplicate key value violates unique constraint")

    set_experiment_facts(RacedClient(), exp_id)
    assert real.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == CUSTOM_MODEL_DEVELOPMENT

    class BrokenClient(RacedClient):
        def set_experiment_tag(self, experiment_id, key, value):
            raise mlflow.exceptions.MlflowException("the store is read-only")

    with pytest.raises(mlflow.exceptions.MlflowException, match="read-only"):
        set_experiment_facts(BrokenClient(), real.create_experiment("broken"))


def test_links_go_to_the_runs_page():
    assert runs_page_url("http://mlflow:5000/", "7") == "http://mlflow:5000/#/experiments/7/runs"
    assert ui_hint("http://mlflow:5000", "7") == "http://mlflow:5000/#/experiments/7/runs"
    hint = ui_hint("sqlite:////x/mlflow.db", "1")
    assert hint.startswith("mlflow ui --backend-store-uri sqlite:////x/mlflow.db") and "/#/experiments/1/runs" in hint


@pytest.mark.parametrize(("uri", "name"), [
    ("file:///data/fashion-mnist-lt/train", "fashion-mnist-lt/train"),
    ("s3://bucket/raw/digits/", "digits/train"),
    ("file:///data/manifest.csv", "manifest/train"),
])
def test_dataset_names_say_which_data(uri, name):
    assert dataset_name(uri, "train") == name


def test_the_description_says_what_and_how_it_differs():
    cfg = config_from_dict({"name": "ls", "model": {"name": "small_cnn"}, "train": {"epochs": 3}})
    text = describe_experiment(cfg)
    assert text.startswith("**ls**: small_cnn on") and "3 epochs" in text


@pytest.mark.parametrize(("value", "on"), [(None, True), ("true", True), ("false", False), ("0", False), ("OFF", False)])
def test_system_metrics_are_on_unless_switched_off(value, on):
    env = {} if value is None else {"MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": value}
    assert system_metrics_enabled(env) is on


def test_an_injected_run_id_cannot_capture_fluent_calls(store, monkeypatch):
    """mlflow/mlflow#15713: with MLFLOW_RUN_ID set, start_run(parent_run_id=P) resumes that run instead."""
    client = mlflow.MlflowClient(tracking_uri=store)
    exp = ensure_experiment("fluent", store)
    task_run = client.create_run(exp).info.run_id
    parent = client.create_run(exp).info.run_id
    client.set_terminated(task_run)  # as KFP's task run may be; still it must not be reopened
    monkeypatch.setenv("MLFLOW_RUN_ID", task_run)
    mlflow.set_tracking_uri(store)
    try:
        with env_run_id_hidden():
            assert "MLFLOW_RUN_ID" not in os.environ
            with mlflow.start_run(experiment_id=exp, parent_run_id=parent) as run:
                mlflow.log_metric("m", 1.0)
    finally:
        mlflow.set_tracking_uri(None)
    assert os.environ["MLFLOW_RUN_ID"] == task_run
    assert run.info.run_id not in (task_run, parent)
    assert client.get_run(run.info.run_id).data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(task_run).data.metrics == {}


def test_promote_moves_champion_and_names_what_exists(store, tmp_path, capsys):
    client = mlflow.MlflowClient(tracking_uri=store)
    client.create_registered_model("best")
    for _ in range(2):
        client.create_model_version("best", str(tmp_path))
    assert promote(store, "best", "1") is None
    assert promote(store, "best", "2") == "1"
    assert str(client.get_model_version_by_alias("best", CHAMPION).version) == "2"
    assert all(v.current_stage in ("None", None) for v in client.search_model_versions("name = 'best'"))
    with pytest.raises(LongtailError, match=r"has no version 3 \(versions: 1, 2\)"):
        promote(store, "best", "3")
    assert main(["promote", "nope", "1", "--tracking-uri", store]) == 2
    assert "no registered model 'nope'" in capsys.readouterr().err
    assert main(["promote", "best", "1", "--tracking-uri", store]) == 0
    assert capsys.readouterr().out.strip() == "best@champion -> version 1 (was version 2)"
