"""A model directory is opened once and passed: predict_submission and evaluate read each of its files once."""

from __future__ import annotations

import builtins
import io
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
import yaml
from digits_models import make_digits, train_model_dir

from longtail.evaluation.run import evaluate
from longtail.logit_adjustment import LogitAdjustment
from longtail.model_dir import (
    ADJUSTMENT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    RUN_FILE,
    ModelDir,
    RunInfo,
)
from longtail.prediction import predict_submission
from longtail.preprocessing import Preprocessing
from longtail.splits import read_info
from longtail.tracking.names import EVAL_MACRO_F1, PREDICT_N_ROWS, PREDICT_POSTHOC_TAU_TAG
from longtail.tracking.store import ensure_experiment


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A tiny digits model with every file predict and evaluate read: config, post-hoc adjustment, MLflow run."""
    root = tmp_path_factory.mktemp("opens")
    data = make_digits(root / "data")
    model_dir = train_model_dir(data, root / "model", scale="scale", epochs=1)
    (model_dir / CONFIG_FILE).write_text(yaml.safe_dump({"name": "digits-dense", "evaluate": {"target_prior": "train"}}))
    ModelDir(model_dir).save_adjustment(LogitAdjustment.from_counts(0.5, read_info(data.train_h5).class_counts()))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    run_id = mlflow.MlflowClient(tracking_uri=uri).create_run(ensure_experiment("opens", uri)).info.run_id
    RunInfo(tracking_uri=uri, experiment="opens", run_id=run_id).save(model_dir)
    return data, model_dir, uri, run_id


@contextmanager
def opens_under(folder: Path) -> Iterator[Counter[str]]:
    """Count every open() of a file in `folder` by file name (Path.read_text and Keras' own opens included)."""
    real = builtins.open
    counts: Counter[str] = Counter()

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).parent == folder:
            counts[Path(file).name] += 1
        return real(file, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", counting_open)  # Keras and zipfile's open()
        mp.setattr(io, "open", counting_open)  # pathlib's
        yield counts


def keras_opens(model_dir: Path) -> int:
    """How many times one load of model.keras opens it (Keras opens the archive more than once itself)."""
    with opens_under(model_dir) as counts:
        ModelDir(model_dir).load_model()
    assert counts[MODEL_FILE] >= 1
    return counts[MODEL_FILE]


@pytest.mark.slow
def test_predict_submission_reads_each_model_file_once(tracked, tmp_path):
    data, model_dir, uri, run_id = tracked
    load = keras_opens(model_dir)
    with opens_under(model_dir) as counts:
        result = predict_submission(model_dir, data.test_h5, tmp_path / "submission.csv", tta=True)
    assert dict(counts) == {RUN_FILE: 1, PREPROCESSING_FILE: 1, ADJUSTMENT_FILE: 1, MODEL_FILE: load}
    # The same logging as before, into the training run: the submission, its tags, the test split as an input.
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert result.mlflow_run_id == run_id and result.n_rows == len(data.test_ids)
    assert run.data.metrics[PREDICT_N_ROWS] == len(data.test_ids)
    assert run.data.tags[PREDICT_POSTHOC_TAU_TAG] == "0.5"
    assert "test" in {tag.value for d in run.inputs.dataset_inputs for tag in d.tags}


@pytest.mark.slow
def test_evaluate_reads_each_model_file_once(tracked, tmp_path):
    data, model_dir, uri, run_id = tracked
    load = keras_opens(model_dir)
    with opens_under(model_dir) as counts:
        result = evaluate(model_dir, data.val_h5, tmp_path / "eval")
    assert dict(counts) == {CONFIG_FILE: 1, RUN_FILE: 1, PREPROCESSING_FILE: 1, ADJUSTMENT_FILE: 1,
                            HISTORY_FILE: 1, MODEL_FILE: load}
    # What config.yaml says was used: its target prior, and its name in the report's title.
    assert result.target_prior == "train"
    assert (tmp_path / "eval" / "report.md").read_text().startswith("# Evaluation: digits-dense on val.h5")
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert result.mlflow_run_id == run_id
    assert run.data.metrics[EVAL_MACRO_F1] == pytest.approx(result.macro_f1)


def test_model_dir_keeps_what_it_read_until_it_writes(tmp_path):
    model = ModelDir(tmp_path)
    model.save_preprocessing(Preprocessing(image_size=8, class_names=["a", "b"]))
    assert model.preprocessing() is model.preprocessing()
    assert model.run_info() is None and model.adjustment() is None and model.config() == {}
    RunInfo("sqlite:///x.db", "exp", "r1").save(tmp_path)
    assert model.run_info() is None  # read once: a file written by other means later is not seen
    model.write_json(RUN_FILE, {"tracking_uri": "sqlite:///x.db", "experiment": "exp", "run_id": "r2"})
    assert model.run_info() == RunInfo("sqlite:///x.db", "exp", "r2")  # its own write is
    adjustment = LogitAdjustment(tau=0.5, log_prior=[-0.5, -1.0])
    model.save_adjustment(adjustment)
    assert model.adjustment() == adjustment
    model.remove_adjustment()
    assert model.adjustment() is None
    assert ModelDir(tmp_path).run_info().run_id == "r2"
