"""Safety rule "Bounds" for the files read whole (docs/safety.md "Bounds"): every one has a size limit,
checked from its stat before a byte is read, and only a regular file is opened.

The hostile cases run the real command in a fresh process on a sparse file (no disk used) and assert a
one-line error, exit status 2 and the process's peak RSS; a FIFO case runs under a timeout, so a
regression that blocks on it fails instead of hanging the suite.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from longtail.cli import main
from longtail.config import config_from_dict
from longtail.errors import ConfigError, DataError
from longtail.file_bounds import (
    CONFIG_MAX_BYTES,
    CSV_LINE_MAX_CHARS,
    CSV_MAX_BYTES,
    KERAS_ENTRIES_MAX,
    KERAS_JSON_MAX_BYTES,
    MANIFEST_MAX_BYTES,
    RECORD_MAX_BYTES,
)
from longtail.model_dir import ModelDir
from longtail.name_registry import maxima_in_package

GiB = 2**30
# Peak RSS a refusal may cost: the interpreter and longtail's imports take 70-230 MB; Keras alone 740 MB.
RSS_MAX_KIB = 300 * 1024
# Seconds a command may take to refuse a file: a regression that reads (or blocks on) one fails here.
COMMAND_TIMEOUT_S = 60

needs_linux = pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB, FIFOs, sparse files")

# Runs `longtail ARGS` as a child of a fresh interpreter, which then owns no other child: its
# RUSAGE_CHILDREN is that command's alone. The timeout kills the command, not only this wrapper.
_WRAPPER = """
import resource, subprocess, sys
timeout = float(sys.argv[1])
try:
    done = subprocess.run([sys.executable, "-m", "longtail.cli", *sys.argv[2:]], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=timeout)
except subprocess.TimeoutExpired:
    print("TIMEOUT", 0)
    raise SystemExit(0)
sys.stderr.buffer.write(done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def run_command(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int | str, str, int]:
    """`longtail ARGS` in a fresh process: (exit status or "TIMEOUT", stderr, peak RSS in KiB)."""
    done = subprocess.run([sys.executable, "-c", _WRAPPER, str(COMMAND_TIMEOUT_S), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S + 60,
                          env={**os.environ, **(env or {})})
    status, rss = done.stdout.split()
    return (status if status == "TIMEOUT" else int(status)), done.stderr.strip(), int(rss)


def assert_refused(result: tuple[int | str, str, int], *phrases: str) -> None:
    """Exit status 2, one line of error naming each phrase, and a peak RSS under RSS_MAX_KIB."""
    status, err, rss = result
    assert status == 2, f"exit {status}: {err[-2000:]}"
    assert len(err.splitlines()) == 1, err[-2000:]
    for phrase in phrases:
        assert phrase in err, err
    assert rss < RSS_MAX_KIB, f"peak RSS {rss // 1024} MB: {err}"


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that holds `head` and then a hole: no disk used, NUL bytes if read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def model_dir_for_predict(root: Path) -> tuple[Path, Path]:
    """A model directory whose preprocessing.json matches a small unlabelled split: predict reaches the
    model file. Returns (model directory, split)."""
    from longtail.splits import write_split

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    pre = {"image_size": 8, "resize": "stretch", "clahe": False, "white_balance": False}
    split = write_split(root / "test.h5", images, [f"{i}.png" for i in range(4)], class_names=["a", "b"],
                        image_size=8, preprocessing=pre, source_fingerprint="test")
    model = root / "model"
    model.mkdir()
    (model / "preprocessing.json").write_text(json.dumps({"image_size": 8, "class_names": ["a", "b"]}))
    return model, split


def keras_zip(path: Path, entries: dict[str, bytes]) -> Path:
    """A zip laid out as Keras writes model.keras (entries stored, not compressed)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


# --- Oversized files: refused from their size, before a byte is read -------------------------------

@needs_linux
def test_a_sparse_6_gb_config_is_refused_before_it_is_read(tmp_path):
    config = sparse(tmp_path / "big.yaml", 6 * GiB, b"name: big\n")  # was 34 s and 12.6 GB peak RSS
    assert_refused(run_command(["train", config, "--train", "t.h5", "--val", "v.h5", "--out", "m"], tmp_path),
                   f"config file {config} is 6 GiB, over the 1 MiB limit: not read")


@needs_linux
def test_a_sparse_3_gb_preprocessing_json_is_refused_before_it_is_read(tmp_path):
    model, split = model_dir_for_predict(tmp_path)
    sparse(model / "preprocessing.json", 3 * GiB, b'{"image_size": 8, ')  # was 6.4 GB peak RSS
    assert_refused(run_command(["predict", model, split, tmp_path / "sub.csv"], tmp_path),
                   "preprocessing.json is 3 GiB, over the 16 MiB limit: not read")
    assert not (tmp_path / "sub.csv").exists()


@needs_linux
def test_a_model_keras_whose_config_json_unpacks_to_256_mib_is_refused_before_keras_starts(tmp_path):
    model, split = model_dir_for_predict(tmp_path)
    # 256 MiB of JSON deflated to 1 MB, the tester's 2 GB re-zipped config.json in small (predict
    # used to succeed at 4.95 GB). Keras alone takes 740 MB, so the check must run before it is imported.
    with zipfile.ZipFile(model / "model.keras", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("metadata.json", "{}")
        with z.open("config.json", "w") as f:
            f.write(b'{"class_name": "Functional"')
            block = b" " * 2**24
            for _ in range(16):
                f.write(block)
            f.write(b"}")
        z.writestr("model.weights.h5", b"")
    assert (model / "model.keras").stat().st_size < 2 * 2**20
    assert_refused(run_command(["predict", model, split, tmp_path / "sub.csv"], tmp_path),
                   "model.keras cannot be loaded as a Keras model: its config.json unpacks to 256.1 MiB, "
                   "over the 16 MiB limit: not read; train the model again")


@needs_linux
@pytest.mark.parametrize("oversized", ["submission", "labels"])
def test_a_sparse_3_gb_csv_for_score_is_refused_before_it_is_read(tmp_path, oversized):
    files = {name: tmp_path / f"{name}.csv" for name in ("submission", "labels")}
    for path in files.values():
        path.write_text("id,label\n1,a\n")
    sparse(files[oversized], 3 * GiB, b"id,label\n")  # was 6.4 GB peak RSS
    assert_refused(run_command(["score", files["submission"], files["labels"]], tmp_path),
                   f"{oversized} CSV {files[oversized]} is 3 GiB, over the 256 MiB limit: not read")


@needs_linux
def test_a_sparse_2_gb_manifest_is_refused_before_it_is_read(tmp_path):
    manifest = sparse(tmp_path / "m.csv", 2 * GiB, b"path,label\n")  # one 2 GB line: was 4.25 GB peak RSS
    assert_refused(run_command(["ingest", manifest, tmp_path / "out"], tmp_path),
                   f"ingest manifest {manifest} is 2 GiB, over the 1 GiB limit: not read")


@needs_linux
def test_one_endless_manifest_line_under_the_size_limit_costs_one_line_of_memory(tmp_path):
    manifest = sparse(tmp_path / "m.csv", 2**29, b"path,label\n")  # line 2: 512 MiB of NUL bytes
    assert_refused(run_command(["ingest", manifest, tmp_path / "out"], tmp_path),
                   f"ingest manifest {manifest} line 2 is over 1,048,576 characters long")


def test_a_submission_line_over_the_line_limit_is_one_line(tmp_path):
    (tmp_path / "labels.csv").write_text("id,label\n1,a\n")
    (tmp_path / "sub.csv").write_text("id,label\n1," + ",".join(["a"] * (CSV_LINE_MAX_CHARS // 2 + 1)) + "\n")
    with pytest.raises(DataError, match=r"submission CSV .*sub.csv line 2 is over 1,048,576 characters long"):
        from longtail.scoring import score

        score(tmp_path / "sub.csv", tmp_path / "labels.csv")


@pytest.mark.parametrize(("name", "read", "limit"), [
    ("preprocessing.json", ModelDir.preprocessing, "16 MiB"),
    ("mlflow_run.json", ModelDir.run_info, "16 MiB"),
    ("logit_adjustment.json", ModelDir.adjustment, "16 MiB"),
    ("training.json", ModelDir.precision, "16 MiB"),
    ("config.yaml", ModelDir.config, "1 MiB"),
])
def test_every_model_directory_record_is_read_within_its_limit(tmp_path, name, read, limit):
    sparse(tmp_path / name, {"16 MiB": RECORD_MAX_BYTES, "1 MiB": CONFIG_MAX_BYTES}[limit] + 1)
    with pytest.raises(DataError, match=rf"{name} is [0-9.]+ MiB, over the {limit} limit: not read"):
        read(ModelDir(tmp_path))


def test_sidecar_json_files_outside_a_model_directory_are_read_within_the_record_limit(tmp_path):
    from longtail.tracking.inputs import split_source_uri
    from longtail.training.inputs import load_class_weights

    weights = sparse(tmp_path / "weights.json", RECORD_MAX_BYTES + 1, b'{"weights": [')
    with pytest.raises(DataError, match=f"class weights file {weights} is 16.1 MiB, over the 16 MiB limit"):
        load_class_weights(weights, ["a", "b"])
    sparse(tmp_path / "ingest.json", RECORD_MAX_BYTES + 1, b'{"source": "')
    with pytest.raises(DataError, match="ingest report .*ingest.json is 16.1 MiB, over the 16 MiB limit"):
        split_source_uri(tmp_path / "train.h5")


def test_a_cached_fashion_mnist_gzip_bomb_is_refused_unpacking_at_its_limit(tmp_path):
    import gzip

    from longtail import datasets

    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as f:  # 65 MiB of zeros in 65 KB
        for _ in range(65):
            f.write(bytes(2**20))
    with pytest.raises(DataError, match="unpacks to more than 64 MiB, which no Fashion-MNIST file does"):
        datasets._read_idx(bomb, "train_images")
    sparse(bomb, 65 * 2**20)
    with pytest.raises(DataError, match=f"Fashion-MNIST file {bomb} is 65 MiB, over the 64 MiB limit"):
        datasets._read_idx(bomb, "train_images")


def test_the_limits_stand_far_above_real_files():
    """Each limit is at least 50 times what real use writes (file_bounds says why each value)."""
    largest_config = max(p.stat().st_size for p in (Path(__file__).parents[2] / "experiments").glob("*.yaml"))
    assert CONFIG_MAX_BYTES >= 50 * largest_config
    assert RECORD_MAX_BYTES >= 10 * 2**20 and KERAS_JSON_MAX_BYTES >= 50 * 175_236  # ResNet-50's config.json
    assert CSV_MAX_BYTES >= 100 * 149_394 and MANIFEST_MAX_BYTES >= CSV_MAX_BYTES
    assert CSV_LINE_MAX_CHARS > 131_072  # the csv module's field limit answers first for one huge field


# --- A folder, FIFO or device where a file belongs: one line that says which, never a hang ----------

def test_a_config_that_is_a_folder_says_so(tmp_path, capsys):
    (tmp_path / "exp.yaml").mkdir()
    assert main(["train", str(tmp_path / "exp.yaml"), "--train", "t", "--val", "v", "--out", "m"]) == 2
    err = capsys.readouterr().err.strip()  # was "config file not found"
    assert err == f"longtail train: error: config file {tmp_path / 'exp.yaml'} is a folder, not a regular file: not read"


@needs_linux
def test_a_config_that_is_a_fifo_says_so_at_once(tmp_path):
    config = fifo(tmp_path / "exp.yaml")
    assert_refused(run_command(["train", config, "--train", "t", "--val", "v", "--out", "m"], tmp_path),
                   f"config file {config} is a FIFO, not a regular file: not read")


@needs_linux
def test_a_submission_that_is_a_fifo_or_a_folder_says_so(tmp_path):
    (tmp_path / "labels.csv").write_text("id,label\n1,a\n")
    assert_refused(run_command(["score", fifo(tmp_path / "sub.csv"), tmp_path / "labels.csv"], tmp_path),
                   "is a FIFO, not a regular file: not read")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match="labels CSV .*dir.csv is a folder, not a regular file"):
        from longtail.submission import read_submission

        read_submission(tmp_path / "dir.csv", what="labels")


def test_a_model_directory_file_that_is_a_folder_says_so(tmp_path):
    (tmp_path / "preprocessing.json").mkdir()
    with pytest.raises(DataError, match="preprocessing.json is a folder, not a regular file"):
        ModelDir(tmp_path).preprocessing()  # was "preprocessing.json is missing"
    (tmp_path / "model.keras").mkdir()
    with pytest.raises(DataError, match="model.keras cannot be loaded as a Keras model: it is a folder"):
        ModelDir(tmp_path).load_model()


@needs_linux
def test_a_sqlite_store_that_is_a_fifo_is_refused_without_opening_it(tmp_path):
    store = fifo(tmp_path / "fifo.db")
    assert_refused(run_command(["report", "x"], tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}),
                   f"MLflow tracking store sqlite:///{store} is a FIFO, not a regular file")  # was a hang


@needs_linux
def test_a_sqlite_store_on_dev_null_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////dev/null")
    assert main(["report", "x"]) == 2  # was 14 lines of SQLAlchemy's error and SQL
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "MLflow tracking store sqlite:////dev/null is a character device, not a regular file" in err


# --- model.keras: its zip directory checked before Keras opens it ---------------------------------

def test_a_truncated_model_keras_says_truncated_and_train_again(tmp_path):
    path = keras_zip(tmp_path / "model.keras", {"metadata.json": b"{}", "config.json": b"{}",
                                                "model.weights.h5": bytes(4096)})
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError) as caught:  # was Keras' "File not found" for a file that exists
        ModelDir(tmp_path).load_model()
    message = str(caught.value)
    assert "model.keras cannot be loaded as a Keras model: it is truncated or not a Keras archive" in message
    assert "train the model again" in message and "not found" not in message and "\n" not in message


def test_a_zip_that_is_not_a_keras_archive_or_lists_too_many_entries_is_refused(tmp_path):
    keras_zip(tmp_path / "model.keras", {"weights.h5": b"x"})
    with pytest.raises(DataError, match="it is not a Keras archive \\(a zip without config.json\\)"):
        ModelDir(tmp_path).load_model()
    keras_zip(tmp_path / "model.keras", {"config.json": b"{}", **{f"assets/{i}": b"" for i in range(KERAS_ENTRIES_MAX + 1)}})
    with pytest.raises(DataError, match=f"its zip directory lists {KERAS_ENTRIES_MAX + 2} entries"):
        ModelDir(tmp_path).load_model()


def test_a_keras_archive_check_passes_a_real_model_and_imports_no_keras_before_it(tmp_path):
    from longtail import keras_archive

    keras_zip(tmp_path / "model.keras", {"metadata.json": b"{}", "config.json": b"{}", "model.weights.h5": b""})
    keras_archive.check_keras_archive(tmp_path / "model.keras")  # the layout Keras writes passes
    source = inspect.getsource(ModelDir.load_model)
    assert source.index("check_keras_archive(path)") < source.index("import keras")


# --- model.args and loss args: bounded by what each builder's registration declares -------------

@pytest.mark.parametrize(("override", "message"), [
    ("model.args.width=100000000", "config field model.args.width must be <= 1024, got 100000000"),
    ("model.args.width=abc", "config field model.args.width must be a number from 0 to 1024, got 'abc'"),
    ("model.args.dropout=5", "config field model.args.dropout must be <= 0.99, got 5"),
])
def test_a_model_arg_over_its_declared_maximum_or_not_a_number_is_one_line(tmp_path, capsys, override, message):
    (tmp_path / "exp.yaml").write_text("model: {name: small_cnn}\n")
    # was 48 s, 11.8 GB and an 82-line TensorFlow OOM traceback (width), or a traceback (abc)
    assert main(["train", str(tmp_path / "exp.yaml"), "--train", "t", "--val", "v", "--out", "m",
                 "--set", override]) == 2
    assert capsys.readouterr().err.strip() == f"longtail train: error: {message}"


@pytest.mark.parametrize(("model", "args", "message"), [
    ("resnet_cifar", {"stages": [3, 3, 1000]}, "model.args.stages must be <= 128, got [3, 3, 1000]"),
    ("resnet_cifar", {"filters": [16, 64, "wide", 256]}, "model.args.filters must be numbers from 0 to 4096"),
    ("resnet50", {"stem_stride": 64}, "model.args.stem_stride must be <= 8, got 64"),
    ("small_cnn", {"width": -1}, "model.args.width must be >= 0, got -1"),
])
def test_list_args_are_bounded_each_and_a_negative_keeps_its_message(model, args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"model": {"name": model, "args": args}})


@pytest.mark.parametrize(("loss", "args", "message"), [
    ("focal", {"gamma": 1e30}, "train.loss.args.gamma must be <= 10, got 1e+30"),
    ("ldam", {"scale": 1e30}, "train.loss.args.scale must be <= 100, got 1e+30"),
    ("ldam", {"max_margin": 50}, "train.loss.args.max_margin must be <= 10, got 50"),
    ("logit_adjusted", {"tau": 1e30}, "train.loss.args.tau must be <= 10, got 1e+30"),
    ("logit_adjusted", {"tau": math.inf}, "train.loss.args.tau must be a finite number, got inf"),
])
def test_an_absurd_or_non_finite_loss_arg_is_one_line(loss, args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"train": {"loss": {"name": loss, "args": args}}})


@pytest.mark.parametrize(("package", "decorator", "skip"), [
    ("longtail.models", "register_model", 2), ("longtail.losses", "register_loss", 1),
])
def test_every_numeric_argument_of_every_builder_declares_a_maximum_above_its_default(package, decorator, skip):
    """The maxima the config check reads from the source are the registry's, and cover every number a
    builder takes: a new model or loss cannot leave one unbounded."""
    import importlib

    importlib.import_module(package)  # registers every builder
    registry = importlib.import_module(f"{package}.registry")
    names = registry._MODELS if skip == 2 else registry._LOSSES
    declared = maxima_in_package(package, decorator)
    assert declared == names.maxima and len(declared) >= 3
    for name, maxima in declared.items():
        builder = names.get(name)
        for p in list(inspect.signature(builder).parameters.values())[skip:]:
            values = p.default if isinstance(p.default, list | tuple) else [p.default]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                assert p.name in maxima, f"{decorator}({name!r}) declares no maximum for {p.name}"
                assert all(v <= maxima[p.name] for v in values), f"{name}.{p.name}'s default is over its maximum"
        assert set(maxima) <= set(inspect.signature(builder).parameters), f"{name}: maxima for arguments it lacks"


def test_every_experiment_stays_valid_under_the_maxima():
    from longtail.config import load_config

    configs = [p for p in sorted((Path(__file__).parents[2] / "experiments").glob("*.yaml"))
               if p.stem == "demo" or p.stem.startswith("exp")]
    assert len(configs) >= 10
    for path in configs:
        load_config(path)


def test_library_callers_of_the_builders_get_the_same_maxima():
    from longtail.losses import build_loss
    from longtail.models.registry import build_model

    with pytest.raises(ConfigError, match="train.loss.args.gamma must be <= 10, got 11"):
        build_loss("focal", [3, 1], gamma=11)
    with pytest.raises(ConfigError, match="model.args.width must be <= 1024, got 100000000"):
        build_model("small_cnn", (8, 8, 3), 2, width=100_000_000)
