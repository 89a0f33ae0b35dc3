"""The error contract's harder cases (docs/safety.md "The error contract"): names that are not UTF-8,
swapped splits, a re-encoded image under another label, an empty val split, a full disk, a checkpoint
cut short and an empty experiment name. Each is one line naming the thing and the fix, or the stated
behaviour, never a traceback."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from digits_models import make_digits
from digits_training_data import write_digits_splits
from PIL import Image
from test_ingest_hostile import make_classes, small_png

from longtail.cli import main
from longtail.errors import DataError, StorageError
from longtail.ingest import ingest
from longtail.splits import read_ids, read_info


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def leftovers(folder: Path) -> list[str]:
    """Split files and temporary files under `folder`: what a failed ingest must not leave."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".h5" or ".longtail-" in p.name)


# --- 1. File and class-folder names that are not UTF-8 -------------------------------------------

def test_names_that_are_not_utf8_are_ingested_escaped_or_rejected_never_stopping_the_ingest(tmp_path, capsys):
    source = make_classes(tmp_path / "src")
    raw = os.fsencode(source)
    try:
        os.mkdir(raw + b"/caf\xe9")  # Latin-1 bytes: not UTF-8
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    for i in range(3):
        with open(raw + b"/caf\xe9/%d.png" % i, "wb") as f:
            f.write(small_png(900 + i))
    with open(raw + b"/a/im\xe9.png", "wb") as f:
        f.write(small_png(999))
    out = tmp_path / "out"
    assert main(["ingest", str(source), str(out), "--workers", "1"]) == 0
    report = json.loads((out / "ingest.json").read_text())
    # A file's name: ingested, its id the name with the byte that is not UTF-8 written \xNN.
    ids = read_ids(out / "train.h5") + read_ids(out / "val.h5")
    assert "a/im\\xe9.png" in ids and report["n_images"] == 13
    # A class folder's name is the class name every prediction prints: its files are rejected, with the reason.
    from longtail.sources import NOT_UTF8_CLASS

    assert report["class_names"] == ["a", "b"]
    assert report["rejected"] == [{"path": f"caf\\xe9/{i}.png", "reason": NOT_UTF8_CLASS} for i in range(3)]
    assert "rename the folder" in NOT_UTF8_CLASS


# --- 2. Train and val swapped ---------------------------------------------------------------------

def test_swapped_train_and_val_splits_are_refused_in_one_line(tmp_path, capsys):
    digits = make_digits(tmp_path / "digits")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "small_cnn"}, "train": {"epochs": 1}}))
    assert main(["train", str(config), "--train", str(digits.val_h5), "--val", str(digits.train_h5),
                 "--out", str(tmp_path / "m"), "--no-tracking"]) == 2
    err = one_line(capsys)
    assert f"the val split {digits.train_h5} is a train split" in err and "look swapped" in err
    assert "pass --train OUT/train.h5 --val OUT/val.h5" in err
    assert not (tmp_path / "m" / "model.keras").exists()


def test_a_train_split_without_the_train_mark_is_refused(tmp_path):
    from longtail.splits import write_split
    from longtail.training import check_splits

    digits = make_digits(tmp_path / "digits")
    info = read_info(digits.val_h5)
    from longtail.splits import read_arrays

    images, labels, ids = read_arrays(digits.val_h5)
    common = dict(class_names=info.class_names, image_size=8, preprocessing=info.preprocessing,
                  source_fingerprint=info.source_fingerprint)
    one = write_split(tmp_path / "one.h5", images[:200], ids[:200], labels=labels[:200], **common)
    two = write_split(tmp_path / "two.h5", images[200:], ids[200:], labels=labels[200:], **common)
    with pytest.raises(DataError, match=r"the train split .*one.h5 has no train pixels' mean .* is it a val or "
                                        r"test split\?"):
        check_splits(read_info(one), read_info(two))
    check_splits(read_info(digits.train_h5), read_info(digits.val_h5))  # the pair as ingest writes it


# --- 3. The same image re-encoded under another label ---------------------------------------------

def test_the_same_image_re_encoded_under_another_label_is_a_label_conflict(tmp_path, caplog):
    source = make_classes(tmp_path / "src", per_class=10)
    pixels = np.asarray(Image.open(source / "a" / "0.png"))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)  # other bytes, the same pixels
    assert buf.getvalue() != (source / "a" / "0.png").read_bytes()
    (source / "b" / "copy.png").write_bytes(buf.getvalue())
    with caplog.at_level(logging.WARNING, logger="longtail.ingest"):
        result = ingest(str(source), tmp_path / "out", workers=1)
    warned = [r.getMessage() for r in caplog.records if "label conflict" in r.getMessage()]
    assert len(warned) == 1 and "a/0.png ('a') and b/copy.png ('b') hold the same image" in warned[0]
    assert result["label_conflicts"] == [{"paths": ["a/0.png", "b/copy.png"], "labels": ["a", "b"]}]
    assert result["label_conflicts_total"] == 1
    assert json.loads((tmp_path / "out" / "ingest.json").read_text())["label_conflicts"] == result["label_conflicts"]
    assert result["n_images"] == 21  # both kept: which label is right is the user's call
    # Equal bytes under two labels stay an error (docs/safety.md "Consistency").
    (source / "b" / "copy.png").write_bytes((source / "a" / "0.png").read_bytes())
    with pytest.raises(DataError, match="same bytes"):
        ingest(str(source), tmp_path / "out2", workers=1)


# --- 4. An empty val split ------------------------------------------------------------------------

def test_val_fraction_zero_is_refused_at_ingest_with_the_smallest_that_works(tmp_path, capsys):
    source = make_classes(tmp_path / "src", per_class=6)
    out = tmp_path / "out"
    assert main(["ingest", str(source), str(out), "--val-fraction", "0", "--workers", "1"]) == 2
    err = one_line(capsys)
    assert "--val-fraction 0 leaves the val split empty" in err and "pass --val-fraction 0.084 or more" in err
    assert leftovers(out) == []
    result = ingest(str(source), out, val_fraction=0.084, workers=1)
    assert result["splits"]["val"] == 2  # the fraction named gives each class one val image
    # A fraction that rounds to no image for every class (round(6 x 0.05) = 0) is refused the same way.
    with pytest.raises(DataError, match=r"--val-fraction 0.05 leaves the val split empty.* 0.084 or more"):
        ingest(str(source), tmp_path / "small", val_fraction=0.05, workers=1)
    assert leftovers(tmp_path / "small") == []
    # A val split left empty another way (every planned file rejected) names the ingest flag too.
    from longtail.splits import write_split
    from longtail.training import check_splits

    info = read_info(out / "val.h5")
    empty = write_split(tmp_path / "empty.h5", np.zeros((0, 32, 32, 3), np.uint8), [], labels=np.zeros(0, np.int32),
                        class_names=info.class_names, image_size=32, preprocessing=info.preprocessing,
                        source_fingerprint=info.source_fingerprint)
    with pytest.raises(DataError, match="is empty: re-run ingest with a larger --val-fraction"):
        check_splits(read_info(out / "train.h5"), read_info(empty))


# --- 5. A full disk, and a checkpoint cut short ---------------------------------------------------

def _private_tmpfs_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _private_tmpfs_works(), reason="needs root and unshare for a private 2 MB tmpfs")
def test_ingest_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    source = make_classes(tmp_path / "src", per_class=100)
    disk = tmp_path / "disk"
    disk.mkdir()
    # A mount namespace of its own: the 2 MB tmpfs exists for this shell only, and nothing system-wide changes.
    script = (f"mount -t tmpfs -o size=2m tmpfs {disk} && "
              f"{sys.executable} -m longtail.cli ingest {source} {disk}/out --image-size 64 --workers 1; "
              f"echo rc=$?; ls -A {disk}/out 2>/dev/null")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"longtail ingest: error: no space left on {disk}/out (")
    assert "MB free" in err and "free some space there" in err
    rc, *listed = done.stdout.split()
    assert rc == "rc=2" and not [n for n in listed if n.endswith(".h5") or ".longtail-" in n]


@pytest.mark.parametrize("where", ["split rows", "fsync"])
def test_enospc_from_a_write_is_one_line_naming_the_folder(tmp_path, capsys, monkeypatch, where):
    from longtail.splits import SplitWriter

    source = make_classes(tmp_path / "src", per_class=10)
    out = tmp_path / "out"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "split rows":  # HDF5 meeting a disk filled by someone else since the room was checked
        monkeypatch.setattr(SplitWriter, "_write_images", full)
    else:
        monkeypatch.setattr(os, "fsync", full)
    assert main(["ingest", str(source), str(out), "--workers", "1"]) == 2
    err = one_line(capsys)
    assert err.startswith(f"longtail ingest: error: no space left on {out} (") and "MB free" in err
    assert leftovers(out) == []


TINY = {
    "name": "tiny",
    "model": {"name": "small_cnn", "args": {"width": 4}},
    "weights": {"scheme": "none"},
    "train": {"epochs": 3, "batch_size": 64, "lr": {"schedule": "constant", "initial": 0.05}},
}


class Interrupt(Exception):
    """Stands for a killed pod."""


@pytest.fixture(scope="module")
def digits16(tmp_path_factory: pytest.TempPathFactory):
    return write_digits_splits(tmp_path_factory.mktemp("digits"), n_train=200, n_val=100)


def _tiny():
    from longtail.config import config_from_dict

    return config_from_dict(json.loads(json.dumps(TINY)))


def _at_epoch_begin(epoch: int, do):
    import keras

    class At(keras.callbacks.Callback):
        def on_epoch_begin(self, e: int, logs: dict | None = None) -> None:
            if e == epoch:
                do()

    return At()


@pytest.mark.slow
def test_a_disk_full_at_a_checkpoint_is_one_line_and_training_resumes_once_freed(digits16, tmp_path, monkeypatch):
    import longtail.disk_full
    from longtail.training import train

    usage = shutil.disk_usage

    def fill_disk() -> None:  # from epoch 2 on, the disk has 1 MB free
        monkeypatch.setattr(longtail.disk_full.shutil, "disk_usage",
                            lambda p: usage(p)._replace(free=2**20))

    out = tmp_path / "model"
    with pytest.raises(StorageError, match=r"no space left on .*backup \(1 MB free, \d+ MB needed\) writing "
                                           r"latest.weights.h5; free some space there"):
        train(_tiny(), digits16.train_h5, digits16.val_h5, out, progress=False,
              extra_callbacks=[_at_epoch_begin(1, fill_disk)])
    monkeypatch.undo()  # space freed
    result = train(_tiny(), digits16.train_h5, digits16.val_h5, out, progress=False)
    assert result.resumed_from_epoch == 1 and result.epochs_run == 3


@pytest.mark.slow
def test_a_checkpoint_cut_short_resumes_from_the_epoch_before_or_says_fresh(digits16, tmp_path, capsys):
    from longtail.training import train

    def interrupt() -> None:
        raise Interrupt

    out = tmp_path / "model"
    backup = out / "checkpoints" / "backup"
    with pytest.raises(Interrupt):
        train(_tiny(), digits16.train_h5, digits16.val_h5, out, progress=False,
              extra_callbacks=[_at_epoch_begin(2, interrupt)])
    latest = backup / "latest.weights.h5"
    os.truncate(latest, latest.stat().st_size // 2)  # what a kill or a full disk mid-save leaves
    result = train(_tiny(), digits16.train_h5, digits16.val_h5, out, progress=False)
    assert result.resumed_from_epoch == 1 and result.epochs_run == 3  # the epoch before the one cut short

    with pytest.raises(Interrupt):
        train(_tiny(), digits16.train_h5, digits16.val_h5, out, progress=False,
              extra_callbacks=[_at_epoch_begin(2, interrupt)])
    for name in ("latest.weights.h5", "latest.weights.h5.bkp"):
        os.truncate(backup / name, 1000)
    config = tmp_path / "exp.yaml"
    config.write_text(json.dumps(TINY))
    split = ["--train", str(digits16.train_h5), "--val", str(digits16.val_h5), "--out", str(out), "--no-tracking"]
    assert main(["train", str(config), *split]) == 2
    err = one_line(capsys)
    assert "latest.weights.h5 does not read whole" in err and "pass --fresh to start afresh" in err
    assert main(["train", str(config), *split, "--fresh"]) == 0


# --- 6. An empty experiment name ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["", "  "])
def test_report_of_an_empty_experiment_name_is_one_line_before_any_server_is_asked(name, capsys, monkeypatch):
    from longtail.tracking.env import TRACKING_URI_ENV

    # A server that would answer an empty name with MLflow's traceback; nothing may reach it.
    monkeypatch.setenv(TRACKING_URI_ENV, "http://127.0.0.1:9")
    assert main(["report", name]) == 2
    err = one_line(capsys)
    assert err == ("longtail report: error: the experiment name is empty; pass the name of an MLflow experiment "
                   "(a config's `experiment` field), e.g. `longtail report demo`")
