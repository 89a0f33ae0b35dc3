"""The one post-run step that run, sweep and train share: score the submission, then register or tag the model."""

from __future__ import annotations

import json

import mlflow
import pytest

from longtail.errors import DataError
from longtail.model_dir import RunInfo
from longtail.post_run import close_run, record_gate_closed
from longtail.tracking.names import (
    BEST_TEST_MACRO_F1,
    CANDIDATE,
    CHAMPION,
    CONFIG_TAG,
    TEST_MACRO_F1,
    TEST_MACRO_F1_TAG,
    VAL_MACRO_F1_TAG,
)


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("post-run")).info.run_id
    (tmp_path / "labels.csv").write_text("id,label\na,cat\nb,dog\nc,dog\nd,cat\n")
    (tmp_path / "submission.csv").write_text("id,label\na,cat\nb,dog\nc,cat\nd,cat\n")
    return uri, client, run_id, tmp_path


def test_a_run_is_scored_then_registered_as_a_candidate_with_its_scores(store):
    uri, client, run_id, tmp = store
    closed = close_run(uri, run_id, submission=tmp / "submission.csv", labels=tmp / "labels.csv",
                       register_as="m", config_name="demo", val_macro_f1=0.71234)
    assert closed.test_macro_f1 == pytest.approx(0.7333, abs=1e-4)
    assert client.get_run(run_id).data.metrics[TEST_MACRO_F1] == closed.test_macro_f1
    version = client.get_model_version_by_alias("m", CANDIDATE)
    assert str(version.version) == closed.registered_version == "1" and version.run_id == run_id
    assert version.tags == {CONFIG_TAG: "demo", VAL_MACRO_F1_TAG: "0.7123", TEST_MACRO_F1_TAG: "0.7333"}


def test_train_registers_without_a_submission_and_nothing_is_scored(store):
    uri, client, run_id, _ = store
    closed = close_run(uri, run_id, register_as="m", config_name="demo", val_macro_f1=0.5)
    assert closed.test_macro_f1 is None and closed.registered_version == "1"
    assert TEST_MACRO_F1 not in client.get_run(run_id).data.metrics
    assert client.get_model_version("m", "1").tags == {CONFIG_TAG: "demo", VAL_MACRO_F1_TAG: "0.5000"}
    assert close_run(uri, run_id).registered_version is None  # nothing asked, nothing done


def test_a_sweep_scores_its_parent_run_and_tags_the_champion_it_registered(store):
    uri, client, run_id, tmp = store
    close_run(uri, run_id, register_as="best", config_name="exp-a", val_macro_f1=0.6)  # the close-out's version
    client.set_registered_model_alias("best", CHAMPION, "1")
    closed = close_run(uri, run_id, submission=tmp / "submission.csv", labels=tmp / "labels.csv",
                       test_metric=BEST_TEST_MACRO_F1, register_as="best", registered_alias=CHAMPION)
    assert closed.registered_version is None
    assert client.get_run(run_id).data.metrics[BEST_TEST_MACRO_F1] == closed.test_macro_f1
    assert client.get_model_version("best", "1").tags[TEST_MACRO_F1_TAG] == "0.7333"
    assert len(client.search_model_versions("name = 'best'")) == 1


def test_a_closed_gate_is_recorded_on_the_model_run_with_evaluates_words(store):
    uri, client, run_id, tmp = store
    model_dir, evaluation = tmp / "model", tmp / "evaluation"
    model_dir.mkdir()
    evaluation.mkdir()
    RunInfo(tracking_uri=uri, experiment="post-run", run_id=run_id).save(model_dir)
    with pytest.raises(DataError, match="is not an evaluation folder"):
        record_gate_closed(model_dir, evaluation, tracking_uri=uri)
    (evaluation / "metrics.json").write_text(json.dumps({"passed": False, "reason": "macro-F1 0.41 < 0.90"}))
    assert record_gate_closed(model_dir, evaluation, tracking_uri=uri) == "macro-F1 0.41 < 0.90"
    assert "macro-F1 0.41 < 0.90" in json.dumps(client.get_run(run_id).data.tags)
