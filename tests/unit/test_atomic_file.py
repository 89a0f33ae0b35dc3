"""The one atomic writer: files appear whole with mode 0644, and a failed write leaves the old file as it was."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from longtail import atomic_file, storage
from longtail.atomic_file import FILE_MODE, atomic_path, write_text
from longtail.errors import DataError, StorageError
from longtail.splits import write_split
from longtail.submission import write_submission


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)  # mkstemp's 0600 and a strict umask must not decide what others can read
    yield
    os.umask(old)


def test_every_writer_leaves_mode_0644(tmp_path, strict_umask):
    assert FILE_MODE == 0o644
    written = [
        write_text(tmp_path / "report.md", "# report\n"),
        Path(storage.write_bytes(str(tmp_path / "ingest.json"), b"{}")),
        write_submission(tmp_path / "submission.csv", ["1", "2"], ["cat", "dog"]),
        write_split(tmp_path / "val.h5", np.zeros((2, 4, 4, 3), np.uint8), ["a.png", "b.png"], labels=np.array([0, 1]),
                    class_names=["cat", "dog"], image_size=4, preprocessing={}, source_fingerprint="x"),
    ]
    for path in written:
        assert mode(path) == 0o644, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ingest.json", "report.md", "submission.csv", "val.h5"]


def test_a_failure_inside_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "submission.csv"
    target.write_text("id,label\n1,cat\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_file.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_submission(target, ["1"], ["dog"])
    assert target.read_text() == "id,label\n1,cat\n"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_a_folder_that_takes_no_file_is_a_clear_error_of_the_callers_kind(tmp_path):
    missing = tmp_path / "no-such-folder" / "x.json"
    with pytest.raises(StorageError, match=f"cannot write {missing}"), atomic_path(missing):
        pass
    with pytest.raises(DataError, match="cannot write submission CSV"), \
            atomic_path(missing, what="submission CSV", error=DataError):
        pass
