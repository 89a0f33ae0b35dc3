"""Safety rule "Consistency": what would mislead silently is refused, or warned in one line (docs/safety.md "Consistency").

Duplicate images across classes and splits, a val split that overlaps train, duplicate YAML keys,
YAML 1.2 numbers, out-of-range knobs, a non-finite loss.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import yaml
from test_ingest_hostile import make_classes, small_png

from longtail.cli import main
from longtail.config import config_from_dict, load_config
from longtail.errors import ConfigError, DataError, LongtailError
from longtail.ingest import ingest
from longtail.yaml_loader import load_yaml

# --- Duplicate images, by content hash, across classes and splits ---------------------------------

def test_a_linked_class_folder_is_an_error_naming_both_paths(tmp_path, capsys):
    source = make_classes(tmp_path / "src")
    (source / "c").symlink_to(source / "b", target_is_directory=True)  # inside the root: followed
    out = tmp_path / "out"
    assert main(["ingest", str(source), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "b/0.png and c/0.png hold the same image (same bytes) under two labels, 'b' and 'c'" in err
    assert not out.exists() or not [p for p in out.iterdir() if p.suffix == ".h5" or p.name.endswith(".tmp")]


def test_a_copied_image_under_its_own_label_counts_once_with_a_warning(tmp_path, caplog):
    source = make_classes(tmp_path / "src", per_class=10)
    for i in range(3):
        (source / "a" / f"copy{i}.png").write_bytes((source / "a" / f"{i}.png").read_bytes())
    with caplog.at_level(logging.WARNING, logger="longtail.ingest"):
        result = ingest(str(source), tmp_path / "out", workers=1, val_fraction=0.5)
    assert result["n_images"] == 20 and result["duplicate_images"] == 3
    assert result["class_counts"] == {"a": 10, "b": 10}
    assert sum(result["splits"].values()) == 20  # each copy dropped, in whichever split it fell
    assert "holds the same image as" in caplog.text and "counted once" in caplog.text
    from longtail.splits import read_ids

    ids = read_ids(tmp_path / "out" / "train.h5") + read_ids(tmp_path / "out" / "val.h5")
    assert len(ids) == len(set(ids)) == 20
    digests = {p: (source / p).read_bytes() for p in ids}
    assert len(set(digests.values())) == 20  # no image stored twice, so none in both train and val
    # The train mean counts only the rows kept: a dropped copy's pixels are out of it too.
    from longtail.splits import read_arrays, read_info

    images, _, _ = read_arrays(tmp_path / "out" / "train.h5")
    assert read_info(tmp_path / "out" / "train.h5").mean_rgb == pytest.approx(
        images.reshape(-1, 3).mean(axis=0).tolist())


def test_unlabelled_duplicates_keep_every_test_id_with_a_warning(tmp_path, caplog):
    source = tmp_path / "test"
    source.mkdir()
    for i in range(4):
        (source / f"{i}.png").write_bytes(small_png(i))
    (source / "again.png").write_bytes(small_png(0))
    with caplog.at_level(logging.WARNING, logger="longtail.ingest"):
        result = ingest(str(source), tmp_path / "out", unlabelled=True, workers=1)
    assert result["n_images"] == 5 and result["duplicate_images"] == 1
    assert "both kept" in caplog.text


# --- A val split that overlaps train ---------------------------------------------------------------

def test_a_val_split_overlapping_train_is_refused(tmp_path):
    from longtail.splits import read_info
    from longtail.training import check_splits

    source = make_classes(tmp_path / "src", per_class=20)
    ingest(str(source), tmp_path / "s0", workers=1, seed=0)
    ingest(str(source), tmp_path / "s1", workers=1, seed=1)
    train, val0, val1 = (read_info(tmp_path / p) for p in ("s0/train.h5", "s0/val.h5", "s1/val.h5"))
    check_splits(train, val0)  # one ingest: disjoint
    with pytest.raises(DataError, match="is the train split itself"):
        check_splits(train, read_info(tmp_path / "s0" / "train.h5"))
    with pytest.raises(DataError, match=r"shares \d+ ids with the train split .* one `longtail ingest` run"):
        check_splits(train, val1)


def test_val_images_with_train_pixels_are_refused_from_another_ingest_and_warned_within_one(tmp_path, caplog):
    from longtail.splits import read_info, write_split
    from longtail.training import check_splits

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    common = dict(class_names=["x", "y"], image_size=8, preprocessing={"image_size": 8})
    train = write_split(tmp_path / "train.h5", images[:2], ["a.png", "b.png"], labels=np.array([0, 1]),
                        source_fingerprint="sha256:one", mean_rgb=[128.0, 128.0, 128.0], **common)
    val_images = np.stack([images[0], images[2], images[3]])  # a.png's pixels again, under another name
    for fingerprint in ("sha256:two", "sha256:one"):
        val = write_split(tmp_path / f"val-{fingerprint[-3:]}.h5", val_images, ["c.png", "d.png", "e.png"],
                          labels=np.array([0, 1, 1]), source_fingerprint=fingerprint, **common)
        if fingerprint == "sha256:two":
            with pytest.raises(DataError, match="has 1 images whose pixels are also in the train split .* another "
                                                "ingest run"):
                check_splits(read_info(train), read_info(val))
        else:
            with caplog.at_level(logging.WARNING, logger="longtail.splits"):
                check_splits(read_info(train), read_info(val))
            assert "val macro-F1 is optimistic" in caplog.text


def test_train_refuses_its_own_train_split_as_val_before_training(tmp_path, capsys):
    source = make_classes(tmp_path / "src", per_class=20)
    ingest(str(source), tmp_path / "data", workers=1)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "small_cnn"}, "train": {"epochs": 1}}))
    train_h5 = str(tmp_path / "data" / "train.h5")
    assert main(["train", str(config), "--train", train_h5, "--val", train_h5, "--out", str(tmp_path / "m"),
                 "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the train split itself" in err


# --- YAML: duplicate keys, YAML 1.2 numbers ------------------------------------------------------

def test_a_duplicate_yaml_key_is_an_error_naming_both_lines(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 5\n  batch_size: 32\n  epochs: 5000\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: duplicate key 'epochs' at line 4 \(first at line 2\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="duplicate key 'train'"):
        load_yaml("train: {}\nmodel: {}\ntrain: {epochs: 1}\n", "config")


@pytest.mark.parametrize(("text", "value"), [("1e-3", 0.001), ("5E4", 50000.0), ("-2.5e+2", -250.0), ("1.0e-5", 1e-5)])
def test_numbers_read_as_yaml_1_2_numbers(text, value):
    assert load_yaml(f"x: {text}", "config") == {"x": value}


def test_an_exponent_learning_rate_is_a_number_in_files_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  optimizer: {name: adam}\n  lr: {schedule: constant, initial: 1e-3}\n")
    assert load_config(path).train.lr.initial == 0.001
    assert load_config(path, ["train.lr.initial=3e-4"]).train.lr.initial == 0.0003
    assert load_yaml("x: '1e-3'", "config") == {"x": "1e-3"}  # quoted stays a string


# --- Ranges: learning rates, seeds, model arguments and names -------------------------------------

@pytest.mark.parametrize(("raw", "message"), [
    ({"train": {"lr": {"initial": 1e30}}}, "config field train.lr.initial must be > 0 and <= 10, got 1e+30"),
    ({"train": {"lr": {"schedule": "step", "boundaries": [2], "values": [0.1, 1e6]}}},
     "config field train.lr.values must be all > 0 and <= 10"),
    ({"train": {"seed": -1}}, "config field train.seed must be between 0 and 4294967295, got -1"),
    ({"train": {"seed": 2**32}}, "config field train.seed must be between 0 and 4294967295"),
    ({"data": {"seed": 2**40}}, "config field data.seed must be <= 4294967295 or null"),
    ({"model": {"name": "small_cnn", "args": {"width": -1}}}, "config field model.args.width must be >= 0, got -1"),
    ({"model": {"name": "nosuch"}}, "config field model.name: unknown model 'nosuch'; known models: resnet50,"),
])
def test_out_of_range_knobs_are_one_line_config_errors(raw, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_model_is_refused_without_tensorflow_and_before_the_output_exists(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("model: {name: nosuch}\n")
    script = ("import sys; from longtail.cli import main; code = main(['train', sys.argv[1], '--train', 'x.h5', "
              "'--val', 'y.h5', '--out', sys.argv[2], '--no-tracking']); "
              "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules); raise SystemExit(code)")
    done = subprocess.run([sys.executable, "-c", script, str(config), str(tmp_path / "m")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "unknown model 'nosuch'" in done.stderr and "TF False False" in done.stdout
    assert not (tmp_path / "m").exists()


def test_model_args_keras_refuses_are_a_config_error():
    from longtail.models import build_model

    with pytest.raises(ConfigError, match="config field model.args .* do not build model 'small_cnn'"):
        build_model("small_cnn", (16, 16, 3), 3, width=0)


def test_ingest_refuses_a_negative_seed_in_one_line(tmp_path, capsys):
    source = make_classes(tmp_path / "src")
    assert main(["ingest", str(source), str(tmp_path / "out"), "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seed must be between 0 and 4294967295, got -1" in err


# --- Corrupt model directories -------------------------------------------------------------------

def test_a_corrupt_model_directory_is_a_one_line_error(tmp_path):
    from longtail.model_dir import ModelDir

    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "preprocessing.json").write_text("{not json")
    with pytest.raises(DataError, match="preprocessing.json is corrupt"):
        ModelDir(tmp_path).preprocessing()
    (tmp_path / "preprocessing.json").write_text(json.dumps({"size": 3}))
    with pytest.raises(DataError, match="is not a longtail preprocessing file"):
        ModelDir(tmp_path).preprocessing()
    with pytest.raises(DataError, match="model.keras cannot be loaded as a Keras model"):
        ModelDir(tmp_path).load_model()


# --- A non-finite loss fails the run and saves no model ------------------------------------------

@pytest.mark.slow
def test_a_non_finite_loss_stops_training_with_a_failed_run_and_no_model(tmp_path, monkeypatch):
    import mlflow
    import tensorflow as tf
    from digits_training_data import write_digits_splits

    import longtail.training.fit as training

    digits = write_digits_splits(tmp_path / "digits", n_train=128, n_val=64)
    real_make_loss = training.make_loss

    def exploding_loss(t, counts):
        loss = real_make_loss(t, counts)
        return lambda y, logits, **kw: loss(y, logits, **kw) * tf.constant(np.inf)

    monkeypatch.setattr(training, "make_loss", exploding_loss)
    cfg = config_from_dict({"model": {"name": "small_cnn", "args": {"width": 4}}, "weights": {"scheme": "none"},
                            "train": {"epochs": 3, "batch_size": 32, "lr": {"schedule": "constant", "initial": 0.05}}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(LongtailError, match=r"training diverged: the loss is (nan|inf) after epoch 1; no model was saved"):
        training.train(cfg, digits.train_h5, digits.val_h5, tmp_path / "model", tracking_uri=uri, progress=False,
                       system_metrics=False)
    assert not (tmp_path / "model" / "model.keras").exists()
    runs = mlflow.MlflowClient(tracking_uri=uri).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(tracking_uri=uri).search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_the_guard_is_one_line_and_lets_finite_losses_pass():
    from longtail.training.callbacks import FiniteLossGuard

    guard = FiniteLossGuard()
    guard.on_epoch_end(0, {"loss": 0.5})
    guard.on_epoch_end(0, {})
    with pytest.raises(LongtailError) as e:
        guard.on_epoch_end(4, {"loss": float("nan")})
    assert "after epoch 5" in str(e.value) and "\n" not in str(e.value)
