"""longtail.tracking is the one home of MLflow: no other module imports it, every name is defined once,
and MLflow's global tracking URI is only borrowed (and given back)."""

import os
import re
from pathlib import Path

import mlflow
import pytest

from longtail.tracking import names
from longtail.tracking.store import fluent_tracking_uri

REPO = Path(__file__).resolve().parents[2]
CODE = [p for folder in ("src", "components", "pipelines") for p in (REPO / folder).rglob("*.py")]
TRACKING = REPO / "src" / "longtail" / "tracking"


def test_only_the_tracking_package_imports_mlflow():
    importing = [p.relative_to(REPO) for p in CODE
                 if TRACKING not in p.parents and re.search(r"^\s*(import|from) mlflow\b", p.read_text(), re.M)]
    assert importing == []


def test_only_the_store_sets_mlflows_global_tracking_uri():
    setting = [p.relative_to(REPO) for p in CODE if "set_tracking_uri(" in p.read_text()]
    assert setting == [Path("src/longtail/tracking/store.py")]


@pytest.mark.parametrize("name", ["eval_macro_f1", "eval_gate", "best_run_id", "val_macro_f1", "lb_score",
                                  "gate_reason", "test_macro_f1", "best_test_macro_f1", "longtail.sweep"])
def test_an_mlflow_name_is_written_out_in_names_only(name):
    assert name in vars(names).values()
    quoted = re.compile(rf"[\"']{re.escape(name)}[\"']")
    assert [p.relative_to(REPO) for p in CODE if quoted.search(p.read_text())] == [
        Path("src/longtail/tracking/names.py")]


def test_the_global_tracking_uri_is_given_back_even_after_an_error(tmp_path):
    before = mlflow.get_tracking_uri()
    with pytest.raises(RuntimeError, match="boom"), fluent_tracking_uri(f"sqlite:///{tmp_path}/borrowed.db"):
        assert mlflow.get_tracking_uri().endswith("borrowed.db")
        raise RuntimeError("boom")
    assert mlflow.get_tracking_uri() == before


@pytest.mark.parametrize("env_before", [None, "sqlite:////somewhere/else.db"])
def test_the_global_tracking_uri_and_the_environment_are_put_back(monkeypatch, tmp_path, env_before):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ; the helper must undo that too."""
    import mlflow

    from longtail.tracking.env import TRACKING_URI_ENV
    from longtail.tracking.store import fluent_tracking_uri

    if env_before is None:
        monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    else:
        monkeypatch.setenv(TRACKING_URI_ENV, env_before)
    before = mlflow.get_tracking_uri()
    inside = f"sqlite:///{tmp_path / 'inside.db'}"
    with fluent_tracking_uri(inside):
        assert mlflow.get_tracking_uri() == inside
    assert os.environ.get(TRACKING_URI_ENV) == env_before
    assert mlflow.get_tracking_uri() == before


def test_an_experiment_another_training_creates_meanwhile_is_taken(tmp_path, monkeypatch):
    """Parallel trainings all miss the experiment and all create it: the losers take the winner's."""
    from longtail.tracking.store import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    winner = mlflow.MlflowClient(uri).create_experiment("parallel")
    lookup = mlflow.MlflowClient.get_experiment_by_name
    missed = []

    def miss_once(self, name):
        if not missed:  # the lookup ran before the other training's create
            missed.append(name)
            return None
        return lookup(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", miss_once)
    assert ensure_experiment("parallel", uri) == winner and missed == ["parallel"]
