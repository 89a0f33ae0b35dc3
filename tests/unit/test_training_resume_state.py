"""Resume state never blocks a corrected re-run: a failure before the first epoch leaves none, and a
changed config meeting saved epochs says how to go on (resume with the old config, or --fresh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from digits_training_data import write_digits_splits

from longtail.config import config_from_dict
from longtail.errors import ConfigError, DataError

TINY = {
    "name": "tiny",
    "model": {"name": "small_cnn", "args": {"width": 4}},
    "weights": {"scheme": "none"},
    "train": {"epochs": 2, "batch_size": 64, "lr": {"schedule": "constant", "initial": 0.05}},
}


class Interrupt(Exception):
    """Stands for a crash or a killed pod."""


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    return write_digits_splits(tmp_path_factory.mktemp("digits"), n_train=200, n_val=100)


def tiny(**train: object):
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return config_from_dict(raw)


def crash_at(phase: str, epoch: int = 0):
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, e: int, logs: dict | None = None) -> None:
            if phase == "begin" and e == epoch:
                raise Interrupt(f"crashed starting epoch {e}")

        def on_epoch_end(self, e: int, logs: dict | None = None) -> None:
            if phase == "end" and e == epoch:
                raise Interrupt(f"crashed after epoch {e}")

    return Crash()


@pytest.mark.slow
def test_a_run_failing_before_its_first_epoch_leaves_nothing_to_block_a_fix(digits, tmp_path: Path) -> None:
    from longtail.training import train

    out = tmp_path / "model"
    with pytest.raises(Interrupt):
        train(tiny(), digits.train_h5, digits.val_h5, out, progress=False, extra_callbacks=[crash_at("begin")])
    assert not (out / "checkpoints").exists()
    result = train(tiny(epochs=1), digits.train_h5, digits.val_h5, out, progress=False)
    assert result.epochs_run == 1 and (out / "model.keras").is_file()


@pytest.mark.slow
def test_state_a_killed_start_left_is_discarded(digits, tmp_path: Path) -> None:
    from longtail.training import train

    ckpt = tmp_path / "model" / "checkpoints"
    ckpt.mkdir(parents=True)  # what a pod killed (SIGKILL) before its first epoch leaves
    (ckpt / "resume.json").write_text(json.dumps({"fingerprint": "another config", "run_id": None}))
    result = train(tiny(epochs=1), digits.train_h5, digits.val_h5, tmp_path / "model", progress=False)
    assert result.epochs_run == 1 and result.resumed_from_epoch == 0 and not ckpt.exists()


@pytest.mark.slow
def test_a_changed_config_meeting_saved_epochs_says_how_to_go_on(digits, tmp_path: Path, capsys) -> None:
    from longtail.cli import main
    from longtail.training import train

    out = tmp_path / "model"
    with pytest.raises(Interrupt):
        train(tiny(epochs=3), digits.train_h5, digits.val_h5, out, progress=False, extra_callbacks=[crash_at("end", 0)])
    assert (out / "checkpoints" / "resume.json").is_file()
    with pytest.raises(ConfigError) as info:
        train(tiny(epochs=2), digits.train_h5, digits.val_h5, out, progress=False)
    message = str(info.value)
    assert "holds 1 finished epochs of a training with another config (train.epochs 3 -> 2)" in message
    assert "to resume it, run again with that config" in message and "pass --fresh" in message
    config = tmp_path / "exp.yaml"
    config.write_text(json.dumps(TINY))
    split = ["--train", str(digits.train_h5), "--val", str(digits.val_h5), "--out", str(out), "--no-tracking"]
    assert main(["train", str(config), *split]) == 2
    assert "pass --fresh" in capsys.readouterr().err
    assert main(["train", str(config), *split, "--fresh", "--set", "train.epochs=1"]) == 0
    assert len(json.loads((out / "history.json").read_text())["val_macro_f1"]) == 1
    assert not (out / "checkpoints").exists()


def test_a_single_class_train_split_is_refused_with_the_reason(tmp_path: Path) -> None:
    import numpy as np

    from longtail.splits import write_split
    from longtail.training import train

    common = dict(class_names=["a", "b"], image_size=8, source_fingerprint="x",
                  preprocessing={"image_size": 8, "resize": "stretch", "clahe": False, "white_balance": False})
    images = np.zeros((4, 8, 8, 3), np.uint8)
    train_h5 = write_split(tmp_path / "train.h5", images, list("pqrs"), labels=np.zeros(4, np.int32), **common)
    val_h5 = write_split(tmp_path / "val.h5", images, list("tuvw"), labels=np.array([0, 1, 0, 1]), **common)
    with pytest.raises(DataError, match="holds one class, and a classifier needs at least two"):
        train(tiny(epochs=1), train_h5, val_h5, tmp_path / "model", progress=False)
    assert not (tmp_path / "model").exists()
