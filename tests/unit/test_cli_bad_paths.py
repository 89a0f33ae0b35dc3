"""Output paths that cannot be used (a file where a folder belongs, /proc, a folder where a file
belongs): every command says so in one line with exit 2, before doing any work."""

from __future__ import annotations

import pytest

from longtail.cli import main


@pytest.fixture
def in_the_way(tmp_path):
    path = tmp_path / "file"
    path.write_text("in the way")
    return path


def run_cli(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_ingest_into_a_file_or_under_proc(tmp_path, in_the_way, capsys):
    from PIL import Image

    source = tmp_path / "src"
    for c in "ab":
        (source / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(source / c / f"{i}.png")
    err = run_cli(capsys, ["ingest", str(source), str(in_the_way)])
    assert err.startswith("longtail ingest: error: ") and "pass an output folder you can write" in err
    err = run_cli(capsys, ["ingest", str(source), "/proc/longtail-out"])
    assert "/proc/longtail-out" in err


def test_weights_into_a_folder_or_under_proc(tmp_path, capsys):
    import numpy as np

    from longtail.splits import write_split

    h5 = write_split(tmp_path / "train.h5", np.zeros((4, 8, 8, 3), np.uint8), list("abcd"), class_names=["x", "y"],
                     image_size=8, preprocessing={}, source_fingerprint="", labels=np.array([0, 1, 0, 1]))
    err = run_cli(capsys, ["weights", str(h5), str(tmp_path), "--scheme", "none"])
    assert err == f"longtail weights: error: output file {tmp_path} is a folder; name a file inside it instead"
    err = run_cli(capsys, ["weights", str(h5), "/proc/w.json", "--scheme", "none"])
    assert "cannot write /proc/w.json" in err


def test_evaluate_and_train_into_a_file(tmp_path, in_the_way, capsys):
    err = run_cli(capsys, ["evaluate", str(tmp_path / "model"), str(tmp_path / "val.h5"), str(in_the_way)])
    assert err == f"longtail evaluate: error: report folder {in_the_way} is a file; name a folder (it is created if missing)"
    config = tmp_path / "exp.yaml"
    config.write_text("train: {epochs: 1}\n")
    err = run_cli(capsys, ["train", str(config), "--train", "t.h5", "--val", "v.h5", "--out", "/proc/longtail-model"])
    assert err.startswith("longtail train: error: cannot create model directory /proc/longtail-model")


def test_any_other_unusable_path_is_still_one_line(in_the_way, capsys):
    err = run_cli(capsys, ["data", "digits-lt", str(in_the_way)])
    assert err.startswith(f"longtail data: error: cannot use {in_the_way}")
