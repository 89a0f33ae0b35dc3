"""The demo datasets: long-tail profile, layout, labels that match the real data, sources and checksums."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from longtail.atomic_file import FILE_MODE
from longtail.cli import main
from longtail.datasets import (
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    long_tail_counts,
    make_digits_lt,
    make_fashion_mnist_lt,
)
from longtail.errors import DataError

needs_fashion = pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist"
)


def test_exponential_profile():
    assert long_tail_counts(6000, 10, 100) == [6000, 3597, 2156, 1293, 775, 465, 278, 167, 100, 60]
    assert long_tail_counts(150, 10, 10)[-1] == 15
    assert long_tail_counts(50, 10, 1) == [50] * 10
    with pytest.raises(DataError, match="imbalance must be >= 1"):
        long_tail_counts(100, 10, 0.5)
    with pytest.raises(DataError, match="leaves the smallest class empty"):
        long_tail_counts(10, 10, 100)


def read_gray(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@needs_fashion
def test_fashion_mnist_lt_layout_and_labels(tmp_path):
    summary = make_fashion_mnist_lt(tmp_path / "f", imbalance=10, seed=3, n_max=40, test_per_class=4)
    out = Path(summary["out_dir"])
    assert summary["class_counts"] == dict(zip(FASHION_MNIST_CLASSES, long_tail_counts(40, 10, 10), strict=True))
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(FASHION_MNIST_CLASSES)
    arrays = load_fashion_mnist()
    # Every training PNG is the original image of its class; its name is its index in the training set.
    for name in FASHION_MNIST_CLASSES:
        files = sorted((out / "train" / name).glob("*.png"))
        assert len(files) == summary["class_counts"][name]
        for f in files[:3]:
            i = int(f.stem)
            assert FASHION_MNIST_CLASSES[arrays["train_labels"][i]] == name
            assert np.array_equal(read_gray(f), arrays["train_images"][i])
    # test/ is balanced and unlabelled; test_labels.csv names each id's class.
    rows = list(csv.DictReader((out / "test_labels.csv").open()))
    assert len(rows) == 40 == len(list((out / "test").glob("*.png")))
    assert {r["label"] for r in rows} == set(FASHION_MNIST_CLASSES)
    for r in rows:
        i = int(r["id"])
        assert FASHION_MNIST_CLASSES[arrays["test_labels"][i]] == r["label"]
        assert np.array_equal(read_gray(out / "test" / f"{r['id']}.png"), arrays["test_images"][i])
    assert json.loads((out / "dataset.json").read_text())["n_train"] == sum(summary["class_counts"].values())


@needs_fashion
def test_fashion_mnist_lt_is_deterministic_per_seed(tmp_path):
    def files(seed: int, where: str) -> list[str]:
        out = make_fashion_mnist_lt(tmp_path / where, imbalance=5, seed=seed, n_max=20, test_per_class=2)["out_dir"]
        return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*.png"))

    assert files(0, "a") == files(0, "b")
    assert files(0, "a") != files(1, "c")


def test_digits_lt(tmp_path):
    summary = make_digits_lt(tmp_path / "d", imbalance=10, seed=0)
    out = Path(summary["out_dir"])
    counts = list(summary["class_counts"].values())
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.05) and counts == sorted(counts, reverse=True)
    rows = list(csv.DictReader((out / "test_labels.csv").open()))
    assert len(rows) == 300 and all(n == 30 for n in np.unique([r["label"] for r in rows], return_counts=True)[1])
    png = read_gray(next((out / "train" / "9").glob("*.png")))
    assert png.shape == (32, 32) and png.dtype == np.uint8
    # Nearest-neighbour upscaling: each 4x4 block is one original pixel, so the 8x8 digit is recoverable.
    assert np.array_equal(png, np.kron(png[::4, ::4], np.ones((4, 4), np.uint8)))
    # Train and test never share an image of the original dataset.
    from sklearn.datasets import load_digits

    assert summary["n_train"] + summary["n_test"] <= len(load_digits().target)


def test_refuses_to_overwrite_a_folder_it_did_not_make_but_replaces_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a longtail dataset folder"):
        make_digits_lt(foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"
    out = tmp_path / "d"
    make_digits_lt(out, imbalance=10)
    make_digits_lt(out, imbalance=2)
    assert json.loads((out / "dataset.json").read_text())["imbalance"] == 2.0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


def test_missing_source_dir_names_the_variable(tmp_path):
    with pytest.raises(DataError, match="not found in .* LONGTAIL_DATA"):
        load_fashion_mnist(tmp_path)


@needs_fashion
def test_a_corrupt_file_fails_its_checksum(tmp_path):
    shutil.copytree(DEBIAN_FASHION_MNIST, tmp_path, dirs_exist_ok=True)
    raw = np.frombuffer(
        __import__("gzip").decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()), np.uint8
    ).copy()
    raw[100] ^= 1  # one label flipped
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw.tobytes())
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte fails its checksum"):
        load_fashion_mnist(tmp_path)


def test_no_source_reachable_names_all_three_options(tmp_path):
    with pytest.raises(DataError) as err:
        load_fashion_mnist(None, base_url="http://127.0.0.1:9/", cache_dir=tmp_path / "cache",
                           debian_dir=tmp_path / "nothing")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "LONGTAIL_DATA" in message and "download" in message


@needs_fashion
def test_download_is_checked_and_cached(tmp_path):
    """The download path against a real HTTP server on 127.0.0.1 serving the packaged files."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(DEBIAN_FASHION_MNIST))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        arrays = load_fashion_mnist(None, base_url=url, cache_dir=tmp_path, debian_dir=tmp_path / "nothing")
    finally:
        server.shutdown()
    assert arrays["train_images"].shape == (60000, 28, 28) and arrays["test_labels"].shape == (10000,)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.gz" for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                            "t10k-labels-idx1-ubyte"))
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {FILE_MODE}  # written by atomic_file


def test_cli_data_digits(tmp_path, capsys):
    assert main(["data", "digits-lt", str(tmp_path / "d"), "--imbalance", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "digits-lt: " in out and "300 test images" in out
    assert (tmp_path / "d" / "test_labels.csv").is_file()


@needs_fashion
def test_cli_data_reads_longtail_data_at_the_edge(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LONGTAIL_DATA", str(tmp_path / "empty"))
    assert main(["data", "fashion-mnist-lt", str(tmp_path / "f")]) == 2
    assert "LONGTAIL_DATA" in capsys.readouterr().err


def test_photos_lt_is_a_small_long_tailed_folder_of_colour_photos(tmp_path, capsys):
    from longtail.photos_lt import PHOTOS_CLASSES, SIDE

    assert main(["data", "photos-lt", str(tmp_path / "a")]) == 0
    assert "photos-lt: 278 training images over 8 classes, 240 test images" in capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "dataset.json").read_text())
    counts = [summary["class_counts"][c] for c in PHOTOS_CLASSES]
    assert counts == sorted(counts, reverse=True) and counts[0] == 100 and counts[-1] == 5
    image = cv2.imread(str(next((tmp_path / "a" / "train" / "dahlia").iterdir())))
    assert image.shape == (SIDE, SIDE, 3)
    assert np.abs(image.astype(int) - image.mean(axis=2, keepdims=True)).mean() > 5  # colour, not grey
    with (tmp_path / "a" / "test_labels.csv").open() as f:
        labels = [r["label"] for r in csv.DictReader(f)]
    assert {lb: labels.count(lb) for lb in PHOTOS_CLASSES} == dict.fromkeys(PHOTOS_CLASSES, 30)
    # Deterministic per seed: the same pixels again; another seed, other crops.
    main(["data", "photos-lt", str(tmp_path / "b")])
    main(["data", "photos-lt", str(tmp_path / "c"), "--seed", "1"])
    first = sorted((tmp_path / "a" / "test").iterdir())[0].name
    assert (tmp_path / "a" / "test" / first).read_bytes() == (tmp_path / "b" / "test" / first).read_bytes()
    assert (tmp_path / "a" / "test" / first).read_bytes() != (tmp_path / "c" / "test" / first).read_bytes()
