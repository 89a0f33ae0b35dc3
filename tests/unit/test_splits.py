"""HDF5 split contract: datasets, attributes, chunking, and write-whole-or-not-at-all."""

import itertools
import json

import h5py
import numpy as np
import pytest
from sklearn.datasets import load_digits

from longtail.errors import DataError
from longtail.splits import SCHEMA_VERSION, SplitWriter, read_arrays, read_info, write_split


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    images = (d.images / 16.0 * 255).astype(np.uint8)[:100]
    images = np.repeat(images[..., None], 3, axis=-1)
    return images, d.target[:100].astype(np.int32)


def test_write_split_follows_the_contract(tmp_path, digits):
    images, labels = digits
    ids = [f"{c}/{i}.png" for i, c in enumerate(labels)]
    path = write_split(tmp_path / "train.h5", images, ids, labels=labels, class_names=[str(i) for i in range(10)],
                       image_size=8, preprocessing={"image_size": 8, "resize": "stretch", "clahe": False,
                                                    "white_balance": False},
                       source_fingerprint="abc", mean_rgb=[1.0, 2.0, 3.0])
    with h5py.File(path) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (100, 8, 8, 3)
        assert f["images"].chunks[0] <= 64 and f["images"].chunks[1:] == (8, 8, 3)
        assert f["labels"].dtype == np.int32
        assert json.loads(f.attrs["class_names"])[3] == "3"
        assert f.attrs["schema_version"] == SCHEMA_VERSION
    info = read_info(path)
    assert info.n == 100 and info.mean_rgb == [1.0, 2.0, 3.0] and info.source_fingerprint == "abc"
    assert sum(info.class_counts()) == 100
    got_images, got_labels, got_ids = read_arrays(path)
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels) and got_ids == ids


def test_unlabelled_split_has_no_labels(tmp_path, digits):
    images, _ = digits
    path = write_split(tmp_path / "test.h5", images, [str(i) for i in range(100)], class_names=[],
                       image_size=8, preprocessing={}, source_fingerprint="x")
    with h5py.File(path) as f:
        assert "labels" not in f and "mean_rgb" not in f.attrs
    assert read_info(path).has_labels is False


def test_a_failed_write_leaves_nothing_behind(tmp_path, digits):
    images, labels = digits
    target = tmp_path / "train.h5"
    with pytest.raises(RuntimeError), SplitWriter(target, n=100, image_size=8, class_names=["a"], labelled=True,
                                                  preprocessing={}, source_fingerprint="") as w:
        w.write(0, images[:50], ["x"] * 50, labels[:50])
        raise RuntimeError("decoder crashed halfway")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_file(tmp_path, digits):
    images, labels = digits
    target = write_split(tmp_path / "train.h5", images, ["a"] * 100, labels=labels, class_names=["a"],
                         image_size=8, preprocessing={}, source_fingerprint="old")
    with pytest.raises(RuntimeError), SplitWriter(target, n=100, image_size=8, class_names=["a"], labelled=True,
                                                  preprocessing={}, source_fingerprint="new"):
        raise RuntimeError("interrupted")
    assert read_info(target).source_fingerprint == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["train.h5"]


def test_bad_arrays_and_missing_files_are_clear_errors(tmp_path, digits):
    images, labels = digits
    with pytest.raises(DataError, match="must be uint8"):
        write_split(tmp_path / "x.h5", images.astype(np.float32), ["a"] * 100, class_names=[], image_size=8,
                    preprocessing={}, source_fingerprint="")
    with pytest.raises(DataError, match="99 ids for 100 images"):
        write_split(tmp_path / "x.h5", images, ["a"] * 99, class_names=[], image_size=8,
                    preprocessing={}, source_fingerprint="")
    with pytest.raises(DataError, match="HDF5 split not found"):
        read_info(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot read HDF5 split"):
        read_info(tmp_path / "junk.h5")


def _write_rows(path, digits, rows):
    images, labels = digits
    reps = -(-rows // len(images))
    big = np.tile(images, (reps, 1, 1, 1))[:rows]
    with SplitWriter(path, n=rows, image_size=8, class_names=[str(i) for i in range(10)], labelled=True,
                     preprocessing={}, source_fingerprint="") as w:
        for start in range(0, rows, 1000):
            block = big[start : start + 1000]
            w.write(start, block, [f"{start + i}.png" for i in range(len(block))],
                    np.tile(labels, reps)[start : start + len(block)])
    return big


def test_rows_are_flushed_to_disk_in_the_background_while_the_split_is_written(tmp_path, digits, monkeypatch):
    import longtail.splits as splits

    synced = []
    real = getattr(splits.os, "fdatasync", splits.os.fsync)
    monkeypatch.setattr(splits, "WRITEBACK_BYTES", 100 * 8 * 8 * 3)
    monkeypatch.setattr(splits.os, "fdatasync", lambda fd: synced.append(fd) or real(fd), raising=False)
    big = _write_rows(tmp_path / "train.h5", digits, 5000)
    assert synced, "no background flush while the rows were written"
    got, _, ids = read_arrays(tmp_path / "train.h5")
    assert np.array_equal(got, big) and len(ids) == 5000


def test_a_failed_background_flush_leaves_no_split(tmp_path, digits, monkeypatch):
    import errno

    import longtail.splits as splits

    # The disk refusing a write-back (EIO) cannot be made to happen for real here: the OS call is replaced.
    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(splits, "WRITEBACK_BYTES", 100 * 8 * 8 * 3)
    monkeypatch.setattr(splits.os, "fdatasync", eio, raising=False)
    monkeypatch.setattr(splits.os, "fsync", eio)
    with pytest.raises(DataError, match="Input/output error"):
        _write_rows(tmp_path / "train.h5", digits, 5000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n", [1, 63, 64, 65, 200, 333])
def test_images_written_at_any_offset_read_back_as_written(tmp_path, n):
    """Whole chunks go to the file as raw chunks, partial ones through h5py: both read back exactly,
    whatever the pieces' sizes and offsets."""
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int32)
    ids = [f"c/{i}.png" for i in range(n)]
    with SplitWriter(tmp_path / "train.h5", n=n, image_size=8, class_names=["a", "b", "c"], labelled=True,
                     preprocessing={}, source_fingerprint="") as writer:
        cuts = sorted({0, n, *rng.integers(0, n, 6).tolist()})
        for a, b in itertools.pairwise(cuts):
            writer.write_images(a, images[a:b])
        for a, b in itertools.pairwise(sorted({0, n, *rng.integers(0, n, 2).tolist()})):
            writer.write_ids(a, ids[a:b], labels[a:b])
    got_images, got_labels, got_ids = read_arrays(tmp_path / "train.h5")
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels) and got_ids == ids
