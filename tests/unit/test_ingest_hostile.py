"""Hostile and careless ingest sources: decompression bombs, symbolic links, bad manifests, leftovers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bombs import BOMBS, png_bomb
from PIL import Image

from longtail.cli import main
from longtail.errors import DataError
from longtail.ingest import ingest
from longtail.sources import list_source
from longtail.splits import SplitWriter, read_info


def small_png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_classes(root: Path, per_class: int = 6, classes: str = "ab") -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / c / f"{i}.png").write_bytes(small_png(ord(c) * 1000 + i))
    return root


def tree_rss(pid: int) -> int:
    """Summed resident memory (bytes) of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    total = 0
    for p in family:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_ingest_of_a_folder_of_bombs_stays_under_1_gb_with_two_workers(tmp_path):
    source = make_classes(tmp_path / "src", per_class=100)
    real_bomb = png_bomb(20_000)  # 400 MP of zeros: 1.2 GB as RGB if decoded
    for c in "ab":
        for ext, make in BOMBS.items():
            data = make()
            for i in range(10):
                (source / c / f"bomb{i}.{ext}").write_bytes(data)
        for i in range(2):
            (source / c / f"real_bomb{i}.png").write_bytes(real_bomb)
    out = tmp_path / "out"
    # A wrapper process measures its children: the ingest, its fork server and every worker.
    measure = (
        "import resource, subprocess, sys;"
        f"subprocess.run([sys.executable, '-m', 'longtail.cli', 'ingest', {str(source)!r}, {str(out)!r}, "
        "'--workers', '2'], check=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"
    )
    proc = subprocess.Popen([sys.executable, "-c", measure], stdout=subprocess.PIPE, text=True)
    peak_sum = 0
    while proc.poll() is None:
        peak_sum = max(peak_sum, tree_rss(proc.pid))
        time.sleep(0.02)
    stdout = proc.stdout.read()
    assert proc.returncode == 0
    peak_one = int(stdout.strip().splitlines()[-1])
    result = json.loads((out / "ingest.json").read_text())
    # Two workers because --workers 2 asks for them (the default is one process below 2,000 files), not
    # because of the cores: os.cpu_count() is not consulted, and one core time-shares them.
    assert result["workers"] == 2
    assert result["n_images"] == 200
    assert result["rejected_total"] == 2 * (10 * len(BOMBS) + 2)  # only the first 100 are named
    assert all(reason.startswith("image too large to decode safely") for reason in result["rejected_counts"])
    print(f"peak RSS: one process {peak_one / 2**20:.0f} MiB, all together {peak_sum / 2**20:.0f} MiB")
    assert peak_one < 2**30, f"one process peaked at {peak_one / 2**20:.0f} MiB"
    assert peak_sum < 2**30, f"the ingest's processes together peaked at {peak_sum / 2**20:.0f} MiB"


def test_symlinks_out_of_the_source_are_rejected_never_read(tmp_path):
    source = make_classes(tmp_path / "src")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd.png").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    (source / "a" / "passwd.png").symlink_to(secret / "passwd.png")
    (source / "b" / "outside").symlink_to(secret, target_is_directory=True)
    (source / ".store").mkdir()  # hidden: not a class; its file is reached only through the link
    (source / ".store" / "x.png").write_bytes(small_png(99))
    (source / "a" / "inside.png").symlink_to(source / ".store" / "x.png")  # inside the root: followed
    result = ingest(str(source), tmp_path / "out", workers=1)
    rejected = {r["path"]: r["reason"] for r in result["rejected"]}
    reason = "symbolic link to outside the source folder (not followed)"
    assert rejected == {"a/passwd.png": reason}  # the folder link holds no image name: ignored, not listed
    assert result["n_images"] == 13
    assert "root:x:0" not in (tmp_path / "out" / "ingest.json").read_text()


def test_a_symlink_loop_is_a_one_line_error(tmp_path, capsys):
    source = make_classes(tmp_path / "src")
    (source / "a" / "again").symlink_to(source, target_is_directory=True)
    assert main(["ingest", str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("longtail ingest: error: symbolic link loop in the source folder:")
    assert "a/again points back to" in err and "remove the link" in err


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    return path


def test_a_manifest_row_repeated_with_the_same_label_counts_once(tmp_path, caplog):
    source = make_classes(tmp_path / "src")
    rows = [(f"{c}/{i}.png", c) for c in "ab" for i in range(6)]
    manifest = write_csv(source / "m.csv", [*rows, ("a/./0.png", "a"), ("b//1.png", "b")])
    result = ingest(str(manifest), tmp_path / "out", workers=1)
    assert result["n_images"] == 12 and result["duplicate_rows"] == 2
    assert "m.csv line 14 repeats a/0.png from line 2; counted once" in caplog.text


def test_a_manifest_path_with_two_labels_is_an_error_naming_both_lines(tmp_path):
    source = make_classes(tmp_path / "src")
    manifest = write_csv(source / "m.csv", [("a/0.png", "a"), ("a/1.png", "a"), ("b/0.png", "b"), ("a/../a/0.png", "b")])
    with pytest.raises(DataError, match=r"lines 2 and 5 give a/0.png two labels \('a' and 'b'\); keep one row per file"):
        ingest(str(manifest), tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


def test_a_manifest_lists_only_the_files_it_names(tmp_path):
    source = make_classes(tmp_path / "src")
    # Beside the manifest: an unrelated tree holding a symlink loop, which a recursive listing trips on.
    (tmp_path / "src" / "unrelated" / "deep").mkdir(parents=True)
    (tmp_path / "src" / "unrelated" / "deep" / "loop").symlink_to(tmp_path / "src", target_is_directory=True)
    (tmp_path / "elsewhere.png").write_bytes(small_png(7))
    (source / "a" / "escape.png").symlink_to(tmp_path / "elsewhere.png")
    manifest = write_csv(source / "m.csv", [("a/0.png", "a"), ("a/1.png", "a"), ("b/0.png", "b"), ("b/1.png", "b"),
                                            ("a/escape.png", "a"), ("b/gone.png", "b")])
    listing = list_source(str(manifest))
    assert [f.relative for f in listing.files] == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    assert listing.rejected.listed == [
        {"path": "a/escape.png", "reason": "symbolic link to outside the source folder (not followed)"},
        {"path": "b/gone.png", "reason": "listed in the manifest but not found"},
    ]


def test_a_failure_in_split_writer_enter_leaves_no_temporary_file(tmp_path):
    with pytest.raises(ValueError), SplitWriter(tmp_path / "train.h5", n=10, image_size=100_000, class_names=["a"],
                                                labelled=True, preprocessing={}, source_fingerprint=""):
        pass
    assert list(tmp_path.iterdir()) == []


def test_image_size_has_the_config_bounds_and_leaves_nothing(tmp_path, capsys):
    source = make_classes(tmp_path / "src")
    with pytest.raises(SystemExit) as info:
        main(["ingest", str(source), str(tmp_path / "out"), "--image-size", "100000"])
    assert info.value.code == 2
    assert "--image-size: must be between 8 and 1024, got 100000" in capsys.readouterr().err
    with pytest.raises(DataError, match="image size must be at most 1024, got 100000"):
        ingest(str(source), tmp_path / "out", image_size=100_000)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_new_ingest_removes_stale_temporary_files(tmp_path):
    source = make_classes(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".train.h5.longtail-abc12345.tmp", out / ".ingest.json.longtail-xyz_6789.tmp"]
    for path in stale:
        path.write_bytes(b"left by a killed ingest")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    keep = out / "notes.tmp"  # not hidden: not a temporary file of ours
    keep.write_bytes(b"x")
    ingest(str(source), out, workers=1)
    assert sorted(p.name for p in out.iterdir()) == [".longtail-written.json", "ingest.json", "notes.tmp", "train.h5",
                                                     "val.h5"]
    assert read_info(out / "train.h5").n > 0


def test_a_single_class_dataset_is_an_error_with_the_reason(tmp_path, capsys):
    source = make_classes(tmp_path / "src", classes="a")
    assert main(["ingest", str(source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "only one class ('a')" in err and "a classifier needs at least two" in err
    make_classes(source, per_class=2, classes="b")  # two classes, but --min-per-class keeps one
    with pytest.raises(DataError, match="only one class"):
        ingest(str(source), tmp_path / "out", min_per_class=3)
