"""A deterministic error fails once (docs/safety.md "Fail once"): local runs check their sources from
the listing before a step starts, and a retried step hands a user's error on instead of being retried."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from longtail.config import load_config
from longtail.errors import DataError, LongtailError
from longtail.handed_on_error import HANDED_ON_FILE, handed_on, raise_handed_on
from longtail.source_check import check_sources
from longtail.storage import S3Settings

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "experiments" / "demo.yaml"


def images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(folder / f"{i}.png")


@pytest.fixture
def one_class(tmp_path) -> tuple[Path, Path]:
    images(tmp_path / "one" / "cat", 6)
    images(tmp_path / "test", 3)
    return tmp_path / "one", tmp_path / "test"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_single_class_fails_before_any_step(one_class, tmp_path, command):
    data, test = one_class
    home = tmp_path / "home"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "longtail.cli", command, str(DEMO), "--data", str(data),
                           "--test", str(test), "--home", str(home)], capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    # Was 113 s: the ingest step failed, then kfp.local retried it twice after 30 s and 60 s.
    assert seconds < 15, seconds
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"longtail {command}: error: only one class ('cat') of {data} is kept"), line
    assert not (home / "pipeline-root").exists()  # no step ran


def test_the_check_lists_and_reads_no_image(tmp_path, monkeypatch):
    # Two classes of files that are no images at all: ingest would reject every one when it decodes
    # them; the check only lists, so it passes (what a valid run does is not changed).
    for folder in (tmp_path / "data" / "a", tmp_path / "data" / "b", tmp_path / "test"):
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.png").write_bytes(b"not a png")

    def no_reads(*args, **kwargs):
        raise AssertionError("the check read a file")

    monkeypatch.setattr("longtail.storage.read_bytes", no_reads)
    monkeypatch.setattr("longtail.storage.read_object", no_reads)
    check_sources(str(tmp_path / "data"), str(tmp_path / "test"), [load_config(DEMO)], S3Settings())


def test_the_check_keeps_the_classes_each_config_keeps(tmp_path):
    images(tmp_path / "data" / "big", 5)
    images(tmp_path / "data" / "small", 2)
    images(tmp_path / "test", 2)
    data, test = str(tmp_path / "data"), str(tmp_path / "test")
    check_sources(data, test, [load_config(DEMO)], S3Settings())
    # A sweep whose second data setting keeps only the big class fails, before its first step.
    strict = load_config(DEMO, ["data.min_per_class=3"])
    with pytest.raises(DataError, match=rf"only one class \('big'\) of {data} is kept"):
        check_sources(data, test, [load_config(DEMO), strict], S3Settings())


def test_the_check_names_an_empty_test_folder(tmp_path):
    images(tmp_path / "data" / "a", 5)
    images(tmp_path / "data" / "b", 5)
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=rf"no images found in {tmp_path / 'test'}"):
        check_sources(str(tmp_path / "data"), str(tmp_path / "test"), [load_config(DEMO)], S3Settings())


def step(out: Path, error: Exception | None, *, retried: bool) -> str:
    """A step's body the way components/train.py runs it: its outputs' empty values after the block."""
    with handed_on(out, retried=retried):
        if error is not None:
            raise error
        return "run-id"
    return ""


def test_a_retried_step_hands_a_user_error_on_and_the_next_step_raises_it(tmp_path, capsys):
    out = tmp_path / "model"
    # Ends normally (exit 0): KFP does not retry it.
    assert step(out, DataError("the loss is NaN at epoch 3; lower train.lr.initial"), retried=True) == ""
    assert "DataError: the loss is NaN at epoch 3" in capsys.readouterr().err
    assert json.loads((out / HANDED_ON_FILE).read_text())["error"] == "DataError"
    # The next step (not retried) fails the run with it, as the same error class.
    with pytest.raises(DataError, match="^the train step stopped: the loss is NaN at epoch 3; lower"):
        raise_handed_on(out, "train")


def test_a_transient_failure_still_fails_the_step_so_kfp_retries_it(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(ConnectionResetError):
        step(out, ConnectionResetError("MinIO went away"), retried=True)
    assert not (out / HANDED_ON_FILE).exists()
    raise_handed_on(out, "train")  # nothing handed on: nothing raised
    assert step(out, None, retried=True) == "run-id"


def test_a_step_kfp_does_not_retry_raises_its_user_error_itself(tmp_path):
    with pytest.raises(DataError):
        step(tmp_path / "model", DataError("bad"), retried=False)
    assert not (tmp_path / "model" / HANDED_ON_FILE).exists()


def test_a_handed_on_record_names_no_credential_and_a_corrupt_one_is_one_line(tmp_path):
    out = tmp_path / "model"
    step(out, LongtailError("MLflow at http://bob:hunter2@mlflow:5000 did not answer"), retried=True)
    with pytest.raises(LongtailError) as e:
        raise_handed_on(out, "train")
    assert "hunter2" not in str(e.value) and "hunter2" not in (out / HANDED_ON_FILE).read_text()
    (out / HANDED_ON_FILE).write_text("{")
    with pytest.raises(LongtailError, match="its record .* cannot be read"):
        raise_handed_on(out, "train")


def test_evaluate_raises_what_train_handed_on_before_any_work(tmp_path):
    from longtail.evaluation import evaluate

    out = tmp_path / "model"
    step(out, DataError("val split overlaps train"), retried=True)
    with pytest.raises(DataError, match="^the train step stopped: val split overlaps train"):
        evaluate(out, tmp_path / "missing-val.h5", tmp_path / "evaluation")
    assert not (tmp_path / "evaluation").exists()
