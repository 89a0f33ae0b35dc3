"""Scaled-LT, the seed-scale folder: its long-tail profile, formats, held-out balanced test set, determinism
and that ingest reads it unchanged (on a small N; its speed lives in benchmarks/scale.py)."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import cv2
import pytest

from longtail.cli import main
from longtail.datasets import DEBIAN_FASHION_MNIST
from longtail.errors import DataError
from longtail.scaled_lt import (
    MAX_CLASSES,
    SEED_CLASSES,
    SEED_IMAGES,
    class_styles,
    make_scaled_lt,
    scaled_counts,
)

needs_fashion = pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")


def test_seed_profile_sums_to_n_with_max_over_min_near_600():
    counts = scaled_counts(SEED_IMAGES, SEED_CLASSES)
    assert sum(counts) == SEED_IMAGES and len(counts) == SEED_CLASSES
    assert counts == sorted(counts, reverse=True)
    assert 540 <= max(counts) / min(counts) <= 660
    # At small N every class still keeps 2 images (one for train, one for val): the ratio gives way.
    small = scaled_counts(1000, 209)
    assert sum(small) == 1000 and min(small) == 2
    with pytest.raises(DataError, match="too few for 209 classes"):
        scaled_counts(300, 209)
    with pytest.raises(DataError, match="--imbalance must be >= 1"):
        scaled_counts(1000, 10, 0.5)


def test_every_class_is_a_distinct_style():
    styles = class_styles(MAX_CLASSES)
    assert len(set(styles)) == MAX_CLASSES
    with pytest.raises(DataError, match="--classes must be between 1 and 420"):
        class_styles(MAX_CLASSES + 1)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    summary = make_scaled_lt(tmp_path_factory.mktemp("s") / "scaled", classes=12, images=900, source_size=48,
                             imbalance=40, test_per_class=5, seed=3, workers=2)
    return Path(summary["out_dir"]), summary


def test_layout_profile_and_formats(small):
    out, summary = small
    counts = summary["class_counts"]
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(counts)
    on_disk = {name: len(list((out / "train" / name).iterdir())) for name in counts}
    assert on_disk == counts and sum(on_disk.values()) == 900 == summary["n_train"]
    assert max(on_disk.values()) / min(on_disk.values()) == pytest.approx(40, rel=0.1)
    files = [p for p in (out / "train").rglob("*") if p.is_file()] + list((out / "test").iterdir())
    suffixes = Counter(p.suffix for p in files)
    assert set(suffixes) == {".jpg", ".png"} and 0.1 < suffixes[".png"] / len(files) < 0.3
    shapes = {cv2.imread(str(p)).shape for p in files[::20]}
    assert len(shapes) > 5 and all(c == 3 and 0.55 * 48 <= min(h, w) and max(h, w) <= 1.55 * 48 for h, w, c in shapes)
    assert json.loads((out / "dataset.json").read_text())["class_counts"] == counts


def test_test_set_is_balanced_and_its_labels_held_out(small):
    out, summary = small
    rows = list(csv.DictReader((out / "test_labels.csv").open()))
    assert Counter(r["label"] for r in rows) == {name: 5 for name in summary["class_names"]}
    on_disk = sorted(p.stem for p in (out / "test").iterdir())
    assert on_disk == sorted(r["id"] for r in rows) and len(on_disk) == summary["n_test"] == 60
    # Ids say nothing of the class: no class name in a test path, and id order is not class order.
    assert not any(name in p.name for p in (out / "test").iterdir() for name in summary["class_names"])
    labels_in_id_order = [r["label"] for r in sorted(rows, key=lambda r: r["id"])]
    assert labels_in_id_order != sorted(labels_in_id_order)


def test_same_seed_same_bytes_whatever_the_workers(small, tmp_path):
    out, _ = small
    again = make_scaled_lt(tmp_path / "again", classes=12, images=900, source_size=48, imbalance=40,
                           test_per_class=5, seed=3, workers=1)
    assert digest(Path(again["out_dir"])) == digest(out)
    other = make_scaled_lt(tmp_path / "other", classes=12, images=900, source_size=48, imbalance=40,
                           test_per_class=5, seed=4, workers=2)
    assert digest(Path(other["out_dir"])) != digest(out)


def test_ingest_reads_it_unchanged(small, tmp_path):
    from longtail.ingest import ingest

    out, summary = small
    report = ingest(str(out / "train"), tmp_path / "h5", image_size=16)
    assert report["n_classes"] == 12 and report["n_images"] == 900 and report["rejected"] == []
    assert report["class_counts"] == summary["class_counts"]


@needs_fashion
def test_cli_writes_it_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["data", "scaled-lt", str(tmp_path / "d"), "--classes", "10", "--images", "60",
                 "--source-size", "32", "--workers", "1"]) == 0
    assert "60 training images over 10 classes" in capsys.readouterr().out
    assert main(["data", "scaled-lt", str(tmp_path / "e"), "--classes", "500"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--classes must be between 1 and 420, got 500" in err
    assert not (tmp_path / "e").exists()


def test_the_printed_class_counts_stay_one_short_line_at_many_classes():
    from longtail.commands.data import SHOWN_CLASSES, class_counts_line

    few = {f"c{i}": 100 - i for i in range(2 * SHOWN_CLASSES)}
    assert class_counts_line(few) == "class counts " + json.dumps(few)
    many = {f"class_{i:03d}": 1000 - 4 * i for i in range(209)}
    line = class_counts_line(many)
    assert line.startswith('class counts, largest 5 {"class_000": 1000,') and "all 209 in dataset.json" in line
    assert '"class_208": 168}' in line and "class_100" not in line
    assert len(line) < 400
