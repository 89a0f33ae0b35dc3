"""Ingest on real digits: split stratification, class filters, the HDF5 attributes, rejects and failures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from longtail import decode_pool, decode_worker, split_sink
from longtail.cli import main
from longtail.datasets import make_digits_lt
from longtail.decoded_batch import Batch, channel_sums
from longtail.errors import DataError
from longtail.ingest import ingest
from longtail.ingest_plan import select_classes, stratified_split
from longtail.preprocessing import Preprocessing
from longtail.splits import SCHEMA_VERSION, read_arrays, read_info


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """scikit-learn digits, long-tailed (144 ... 14 per class) as 32x32 PNG class folders."""
    out = tmp_path_factory.mktemp("digits") / "d"
    make_digits_lt(out, imbalance=10, seed=0)
    return out


@pytest.fixture(scope="module")
def ingested(digits, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("h5")
    return out, ingest(str(digits / "train"), out, image_size=16, val_fraction=0.25, seed=1, workers=2)


def test_stratified_split_keeps_each_class_proportion():
    labels = [0] * 100 + [1] * 40 + [2] * 7 + [3] * 1
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + val) == list(range(len(labels)))
    val_counts = Counter(labels[i] for i in val)
    assert val_counts == {0: 20, 1: 8, 2: 1}  # round(n * 0.2); the single image of class 3 stays in train
    assert stratified_split(labels, 0.2, seed=0) == (train, val)
    assert stratified_split(labels, 0.2, seed=1) != (train, val)
    assert train != sorted(train)  # rows shuffled: contiguous chunks mix classes
    with pytest.raises(DataError, match=r"--val-fraction must be in \[0, 1\), got 1.0"):
        stratified_split(labels, 1.0, seed=0)


def test_select_classes():
    counts = {"a": 50, "b": 5, "c": 20, "d": 20, "e": 1}
    assert select_classes(counts) == ["a", "b", "c", "d", "e"]
    assert select_classes(counts, min_per_class=5) == ["a", "b", "c", "d"]
    assert select_classes(counts, max_classes=2) == ["a", "c"]  # largest first, ties by name
    assert select_classes(counts, min_per_class=6, max_classes=10) == ["a", "c", "d"]
    with pytest.raises(DataError, match="--max-classes must be >= 1"):
        select_classes(counts, max_classes=0)


def test_rows_sum_to_the_class_counts(ingested, digits, capsys):
    out, result = ingested
    train, val = read_info(out / "train.h5"), read_info(out / "val.h5")
    on_disk = {p.name: len(list(p.glob("*.png"))) for p in (digits / "train").iterdir()}
    assert result["class_counts"] == on_disk
    summed = np.add(train.class_counts(), val.class_counts())
    assert dict(zip(train.class_names, summed.tolist(), strict=True)) == on_disk
    assert result["splits"] == {"train": train.n, "val": val.n} and result["n_images"] == train.n + val.n
    for name, n in on_disk.items():  # each class is split 75/25
        assert val.class_counts()[train.class_names.index(name)] == round(n * 0.25)
    assert result["rejected"] == [] and result["ignored"] == 0
    assert json.loads((out / "ingest.json").read_text()) == result


def test_hdf5_attributes(ingested):
    out, result = ingested
    images, labels, ids = read_arrays(out / "train.h5")
    train = read_info(out / "train.h5")
    assert images.shape[1:] == (16, 16, 3) and images.dtype == np.uint8
    assert train.class_names == [str(d) for d in range(10)] and train.image_size == 16
    assert train.schema_version == SCHEMA_VERSION
    assert train.preprocessing == {"image_size": 16, "resize": "stretch", "clahe": False, "white_balance": False}
    assert train.mean_rgb == pytest.approx(images.reshape(-1, 3).mean(axis=0).tolist())
    assert read_info(out / "val.h5").mean_rgb is None  # train only
    assert train.source_fingerprint == read_info(out / "val.h5").source_fingerprint == result["source_fingerprint"]
    # ids are paths relative to SOURCE, and each label is its folder's class.
    assert all(train.class_names[label] == i.split("/")[0] for label, i in zip(labels, ids, strict=True))
    with h5py.File(out / "train.h5") as f:
        assert f["images"].chunks[0] == 64
    # A model trained on this split accepts it; one trained with other settings refuses it.
    Preprocessing.from_split(train, "scale").check_split(train.preprocessing, 16, "train")
    with pytest.raises(DataError, match="clahe"):
        Preprocessing(image_size=16, class_names=[], clahe=True).check_split(train.preprocessing, 16, "train")


def test_pixels_match_decoding_each_file(ingested, digits):
    out, _ = ingested
    from longtail.decode import PixelSettings, to_pixels

    images, _, ids = read_arrays(out / "val.h5")
    for k in (0, len(ids) // 2, len(ids) - 1):
        want = to_pixels((digits / "train" / ids[k]).read_bytes(), PixelSettings(image_size=16))
        assert np.array_equal(images[k], want)


def test_parallel_and_in_process_ingest_write_the_same_files(ingested, digits, tmp_path):
    out, result = ingested
    single = ingest(str(digits / "train"), tmp_path, image_size=16, val_fraction=0.25, seed=1, workers=1)
    assert single["source_fingerprint"] == result["source_fingerprint"]
    for split in ("train", "val"):
        a, b = read_arrays(out / f"{split}.h5"), read_arrays(tmp_path / f"{split}.h5")
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_filters(digits, tmp_path, capsys):
    result = ingest(str(digits / "train"), tmp_path / "k", max_classes=3, workers=1)
    assert list(result["class_counts"]) == ["0", "1", "2"]  # the three largest
    assert result["filtered"] == {"classes": 7, "images": sum(1 for _ in (digits / "train").rglob("*.png"))
                                  - sum(result["class_counts"].values())}
    result = ingest(str(digits / "train"), tmp_path / "m", min_per_class=40, workers=1)
    assert all(n >= 40 for n in result["class_counts"].values()) and "6" not in result["class_counts"]
    with pytest.raises(DataError, match="no class of .* has --min-per-class 1000 images"):
        ingest(str(digits / "train"), tmp_path / "n", min_per_class=1000)


def test_colour_ops_and_resize_are_recorded(digits, tmp_path):
    ingest(str(digits / "train"), tmp_path, image_size=8, resize="aspect", clahe=True, white_balance=True,
           max_classes=2, workers=1)
    info = read_info(tmp_path / "train.h5")
    assert info.preprocessing == {"image_size": 8, "resize": "aspect", "clahe": True, "white_balance": True}


def test_fingerprint_is_stable_and_follows_the_bytes(digits, tmp_path):
    src = tmp_path / "src"
    for name in ("0", "9"):
        (src / name).mkdir(parents=True)
        for f in sorted((digits / "train" / name).glob("*.png"))[:10]:
            (src / name / f.name).write_bytes(f.read_bytes())
    first = ingest(str(src), tmp_path / "a", workers=1)["source_fingerprint"]
    assert ingest(str(src), tmp_path / "b", workers=1)["source_fingerprint"] == first
    victim = next((src / "9").glob("*.png"))
    victim.write_bytes(victim.read_bytes() + b"\0")  # same pixels, different bytes
    assert ingest(str(src), tmp_path / "c", workers=1)["source_fingerprint"] != first
    assert ingest(str(src), tmp_path / "d", workers=1, seed=5)["source_fingerprint"] != first


def test_unlabelled(digits, tmp_path, capsys):
    result = ingest(str(digits / "test"), tmp_path, unlabelled=True)
    info = read_info(tmp_path / "test.h5")
    assert not info.has_labels and info.n == 300 == result["splits"]["test"] and info.mean_rgb is None
    assert not (tmp_path / "train.h5").exists()
    assert "test data has 300 samples" in capsys.readouterr().out


def test_errors_are_clear(digits, tmp_path):
    with pytest.raises(DataError, match="use --unlabelled for a flat test folder"):
        ingest(str(digits / "test"), tmp_path)
    with pytest.raises(DataError, match="ingest source not found"):
        ingest(str(tmp_path / "nothing"), tmp_path)
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "a.png").write_bytes(b"")
    (tmp_path / "bad" / "cls" / "b.jpg").write_bytes(b"not really")
    (tmp_path / "bad" / "cls2").mkdir()
    (tmp_path / "bad" / "cls2" / "c.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"no image in .* could be decoded \(3 rejected, e.g. cls2/c.png: empty file"):
        ingest(str(tmp_path / "bad"), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_ingest_that_fails_midway_leaves_nothing_behind(digits, tmp_path, monkeypatch):
    calls = 0
    real = decode_worker.to_pixels

    def interrupted(data, settings):
        nonlocal calls
        calls += 1
        if calls == 300:  # train.h5 has rows written, val.h5 none yet
            raise KeyboardInterrupt
        return real(data, settings)

    monkeypatch.setattr(decode_worker, "to_pixels", interrupted)
    monkeypatch.setattr(split_sink, "FLUSH_ROWS", 64)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        ingest(str(digits / "train"), out, workers=1)
    assert calls == 300
    assert not out.exists()  # no train.h5, val.h5, temporary file, ingest.json or lock: not even the folder it made


def test_cli_prints_the_log_lines(digits, tmp_path, capsys):
    assert main(["ingest", str(digits / "train"), str(tmp_path), "--image-size", "8", "--val-fraction", "0.2",
                 "--max-classes", "4", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    result = json.loads((tmp_path / "ingest.json").read_text())
    assert lines[0] == f"fetched 4 classes and {result['n_images']} images in total"
    assert lines[1] == f"training data has {result['splits']['train']} samples over 4 classes"
    assert lines[2] == f"validation data has {result['splits']['val']} samples over 4 classes"
    with pytest.raises(SystemExit):
        main(["ingest", str(digits / "train"), str(tmp_path), "--workers", "0"])
    assert "--workers: must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_parallel_ingest_after_opencv_ran_its_threads_here(digits, tmp_path):
    """A forked worker hangs in OpenCV if the parent ran OpenCV's thread pool; ingest's workers must not."""
    import cv2

    big = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    cv2.resize(cv2.cvtColor(big, cv2.COLOR_RGB2LAB), (1000, 1000))  # parallel_for in this process
    result = ingest(str(digits / "train"), tmp_path, workers=2, clahe=True)
    assert result["workers"] == 2 and result["n_images"] == 588


def test_default_worker_count_is_one_process_below_a_few_thousand_files(monkeypatch):
    monkeypatch.setattr(decode_pool.os, "cpu_count", lambda: 4)
    below = decode_pool.POOL_MIN_FILES - 1
    assert decode_pool.worker_count(None, below) == 1  # a pool's start-up costs more than it saves
    assert decode_pool.worker_count(None, decode_pool.POOL_MIN_FILES) == 4  # one per core
    assert decode_pool.worker_count(2, 600) == 2  # asked for: honoured, if the files fill two batches each
    assert decode_pool.worker_count(8, 600) == 4
    assert decode_pool.worker_count(2, 100) == 1


def test_parallel_ingest_with_rejected_files_and_small_batches_matches_one_process(digits, tmp_path, monkeypatch):
    """Rows of a batch with rejected files fill only the front of its shared slot; slots are reused."""
    src = tmp_path / "src"
    for i, f in enumerate(sorted((digits / "train").rglob("*.png"))):
        (src / f.parent.name).mkdir(parents=True, exist_ok=True)
        (src / f.parent.name / f.name).write_bytes(f.read_bytes())
        if i % 7 == 0:
            (src / f.parent.name / f"broken{i}.png").write_bytes(f.read_bytes()[:40])
    monkeypatch.setattr(decode_pool, "BATCH_FILES", 8)  # many batches, slots handed out again
    monkeypatch.setattr(decode_pool, "IN_FLIGHT_BATCHES", 5)
    parallel = ingest(str(src), tmp_path / "two", image_size=16, workers=2)
    single = ingest(str(src), tmp_path / "one", image_size=16, workers=1)
    assert parallel["workers"] == 2 and len(parallel["rejected"]) == len(single["rejected"]) > 50
    for split in ("train", "val"):
        a, b = read_arrays(tmp_path / "two" / f"{split}.h5"), read_arrays(tmp_path / "one" / f"{split}.h5")
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert read_info(tmp_path / "two" / "train.h5").mean_rgb == read_info(tmp_path / "one" / "train.h5").mean_rgb


class _ClockedPool:
    """A one-worker pool on a clock that ticks once per batch this process decodes: a batch takes
    `steps` ticks, after the batches queued before it. Waiting on one (result) moves the clock to its
    end. No threads and no sleeps, so which process decodes which batch does not depend on the machine."""

    def __init__(self, steps: int, work):
        self.steps, self.work, self.clock, self.free_at = steps, work, 0, 0

    def submit(self, *args):
        self.free_at = max(self.clock, self.free_at) + self.steps
        return _ClockedFuture(self, self.free_at, self.work(*args))


class _ClockedFuture:
    def __init__(self, pool: _ClockedPool, done_at: int, value):
        self.pool, self.done_at, self.value = pool, done_at, value

    def done(self) -> bool:
        return self.pool.clock >= self.done_at

    def cancel(self) -> bool:
        return False  # handed out only once the pool is up: begun, or queued behind a begun one

    def result(self):
        self.pool.clock = max(self.pool.clock, self.done_at)
        return self.value


@pytest.mark.parametrize(("pool_steps", "ready_after"), [(0, 0), (1, 0), (5, 0), (0, 10)])
def test_this_process_decodes_while_it_waits_for_the_pool_and_batches_stay_in_order(pool_steps, ready_after):
    """_shared_decode with a pool on a clock (a batch takes the pool `pool_steps` of this process's
    batches): every batch once, in order, its pixels from its own slot; this process takes batches
    while the one due is still in the pool, never further ahead than the pool's queue and
    OWN_AHEAD_BATCHES, and a slot is never handed out twice at once. Until the pool has started (its
    first worker forking), this process decodes every batch and hands none out."""
    n, rows = 60, 3
    batches = [[f"{b}-{r}" for r in range(rows)] for b in range(n)]
    ring = np.zeros((5, rows, 1, 1, 3), np.uint8)
    slots_in_use: set[int] = set()
    here: list[int] = []
    ahead: list[int] = []
    consumed = [0]

    def batch_of(files, pixels):
        return Batch(pixels, [""] * len(files), [f"d{f}" for f in files], [1] * len(files), np.zeros(3))

    def in_pool(files, slot):
        ring[slot, : len(files)] = int(files[0].split("-")[0])
        return batch_of(files, None)

    pool = _ClockedPool(pool_steps, in_pool)

    def submit(files, slot):
        assert consumed[0] >= ready_after, "a batch handed to a pool that has not started"
        assert slot not in slots_in_use, "a slot handed out twice"
        slots_in_use.add(slot)
        return pool.submit(files, slot)

    def decode_here(files):
        b = int(files[0].split("-")[0])
        here.append(b)
        ahead.append(b - consumed[0])
        pool.clock += 1
        return batch_of(files, np.full((len(files), 1, 1, 3), b, np.uint8))

    out = []
    ready = lambda: consumed[0] >= ready_after  # noqa: E731
    for i, batch in enumerate(decode_pool._shared_decode(batches, submit, decode_here, ring, 1, ready)):
        assert batch.digests == [f"d{f}" for f in batches[i]]
        assert (batch.pixels == i).all() and len(batch.pixels) == rows
        slots_in_use.clear()  # every batch up to here is consumed: its slot may go out again
        consumed[0] = i + 1
        out.append(i)
    assert out == list(range(n))
    # The read-ahead is bounded: the pool's queue, then this process's own batches beyond it.
    assert max(ahead, default=0) <= decode_pool.QUEUED_PER_WORKER + decode_pool.OWN_AHEAD_BATCHES
    if pool_steps >= 5:  # a slow pool: this process decodes most batches itself
        assert len(here) > n // 2
    if pool_steps == 0:  # an instant pool: this process rarely has to step in
        assert len(here) < n // 2
    if pool_steps == 1:  # as fast as this process: both decode
        assert 0 < len(here) < n
    assert here[:ready_after] == list(range(ready_after))


@pytest.mark.timeout(60)
def test_the_pools_first_batches_are_taken_back_while_it_has_no_worker_and_waited_for_once_begun():
    """_shared_decode with batches handed to the pool as it starts (`first`): while the pool has no
    worker yet, this process takes back each one it comes to (cancelled: the pool never runs it) and
    decodes it; one the pool has begun is waited for and read from its slot. Nothing more is handed to
    the pool before it is up."""
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    n, rows = 14, 2
    batches = [[f"{b}-{r}" for r in range(rows)] for b in range(n)]
    ring = np.full((6, rows, 1, 1, 3), 255, np.uint8)
    here: list[int] = []
    up = threading.Event()

    def batch_of(files, pixels):
        return Batch(pixels, [""] * len(files), ["d"] * len(files), [1] * len(files), np.zeros(3))

    def decode_here(files):
        here.append(int(files[0].split("-")[0]))
        return batch_of(files, np.full((len(files), 1, 1, 3), here[-1], np.uint8))

    first = {i: (Future(), i) for i in range(3)}
    first[0][0].set_running_or_notify_cancel()  # begun by the pool's worker, done a little later

    def finish_first_batch():
        ring[0] = 0
        first[0][0].set_result(batch_of(batches[0], None))

    def in_pool(files, slot):
        ring[slot, : len(files)] = int(files[0].split("-")[0])
        return batch_of(files, None)

    def submit(files, slot):
        assert up.is_set(), "a batch handed to a pool that has no worker"
        assert slot not in (1, 2) or first[slot][0].cancelled()  # a taken-back batch's slot is free again
        return executor.submit(in_pool, files, slot)

    threading.Timer(0.05, finish_first_batch).start()
    with ThreadPoolExecutor(1) as executor:
        for i, batch in enumerate(decode_pool._shared_decode(batches, submit, decode_here, ring, 1, up.is_set, first)):
            assert (batch.pixels == i).all() and len(batch.pixels) == rows
            if i == 2:
                up.set()
    assert first[1][0].cancelled() and first[2][0].cancelled()
    # Waiting on batch 0, this process decoded ahead (up to OWN_AHEAD_BATCHES), then took back 1 and 2.
    ahead = list(range(3, 3 + decode_pool.OWN_AHEAD_BATCHES))
    assert here[: len(ahead) + 2] == [*ahead, 1, 2]
    assert 0 not in here and len(here) < n  # once up, the pool decodes the rest with this process


def test_the_pool_decodes_its_first_batches_before_this_process_loads_the_decoders(digits):
    """decoded_batches starts the pool and hands it its first batches before anything is asked for:
    they are decoded while this process has loaded neither OpenCV nor h5py, and every batch comes out
    as one process decodes it."""
    code = f"""
import sys
from longtail import decode_pool
from longtail.sources import list_source
from longtail.pixel_settings import PixelSettings

files = [f.uri for f in list_source({str(digits / "train")!r}).files][:512]
batches = [files[i : i + 64] for i in range(0, len(files), 64)]
settings = PixelSettings(image_size=16)
decoding = decode_pool.decoded_batches(batches, settings, None, 2)
decoding._pool.first[0][0].result()
loaded = [m for m in ("cv2", "PIL", "h5py") if m in sys.modules]
two = [(b.pixels.copy(), b.digests) for b in decoding]
decoding.close()
one = [(b.pixels, b.digests) for b in decode_pool.decoded_batches(batches, settings, None, 1)]
same = all((a[0] == b[0]).all() and a[1] == b[1] for a, b in zip(two, one, strict=True))
print(len(two), loaded, same)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "8 [] True"


@pytest.mark.timeout(120)
def test_a_pool_closed_before_anything_is_asked_of_it_stops_its_workers(digits):
    """decoded_batches starts the pool before the caller iterates: a caller that fails before its first
    batch (a split it cannot create) closes it, and its workers are gone, not left decoding."""
    import time

    import psutil

    from longtail.pixel_settings import PixelSettings

    files = [str(p) for p in sorted((digits / "train").rglob("*.png"))][:512]
    decoding = decode_pool.decoded_batches([files[i : i + 64] for i in range(0, len(files), 64)],
                                           PixelSettings(image_size=16), None, 2)
    decoding._pool.first[0][0].result()  # its worker is up and decoding
    workers = [psutil.Process(w.process.pid) for w in decoding._pool._workers]
    assert workers and all(w.is_running() for w in workers)
    decoding.close()
    deadline = time.monotonic() + 10
    while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


@pytest.mark.timeout(120)
def test_a_pool_worker_that_dies_is_a_clear_error_not_a_wait(digits):
    """A worker killed mid-ingest (the OOM killer, a crash in a decoder) closes its pipes: the batches it
    owed end the ingest with an error naming it and its exit code, instead of a wait for ever."""
    import os
    import signal

    from longtail.pixel_settings import PixelSettings

    files = [str(p) for p in sorted((digits / "train").rglob("*.png"))]
    decoding = decode_pool.decoded_batches([files[i : i + 16] for i in range(0, len(files), 16)],
                                           PixelSettings(image_size=16), None, 2)
    decoding._pool.first[0][0].result()
    pid = decoding._pool._workers[0].process.pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match=rf"decoding worker \(pid {pid}\) stopped with exit code -9"):
        for _ in decoding:
            pass
    decoding.close()


def test_near_the_end_the_pool_holds_no_more_than_its_share():
    """The pool's queue is QUEUED_PER_WORKER deep per worker while batches are plenty, then shrinks to
    its share of what is left (never below one per worker), so neither side idles at the end."""
    depth = decode_pool.QUEUED_PER_WORKER
    assert decode_pool.pool_depth(100, 1) == depth and decode_pool.pool_depth(100, 3) == 3 * depth
    assert [decode_pool.pool_depth(left, 1) for left in (8, 6, 4, 3, 2, 1, 0)] == [4, 3, 2, 1, 1, 1, 1]
    assert decode_pool.pool_depth(4, 3) == 3


def test_progress_bar_only_when_shown(digits, tmp_path):
    """A bar on stderr when asked; without one (a pipeline step, a pipe) tqdm is not even imported."""
    import subprocess
    import sys

    code = ("import sys\nfrom longtail.ingest import ingest\nif __name__ == '__main__':\n"
            f"    ingest({str(digits / 'train')!r}, sys.argv[1], image_size=8, workers=1, progress=sys.argv[2] == 'on')\n"
            "    print('tqdm' in sys.modules)")
    script = tmp_path / "run_ingest.py"
    script.write_text(code)
    for shown in ("off", "on"):
        done = subprocess.run([sys.executable, str(script), str(tmp_path / shown), shown], capture_output=True,
                              text=True, check=True)
        assert done.stdout.split()[-1] == str(shown == "on")
        assert ("ingest: 100%" in done.stderr) == (shown == "on"), done.stderr[-300:]


@pytest.mark.parametrize("n", [5, 64, 200, 1500])
def test_the_split_sink_writes_blocks_of_any_size_whole_chunks_at_a_time(tmp_path, n):
    """Blocks as decoding gives them (64 rows, or fewer after rejected files, or none) land in order;
    the sink keeps no block after add returns (each is overwritten at once, as a ring slot is)."""
    from longtail.splits import SplitWriter

    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, n).tolist()
    ids = [f"c/{i}.png" for i in range(n)]
    reused = np.empty((64, 8, 8, 3), np.uint8)  # one buffer for every block, like a ring slot
    with SplitWriter(tmp_path / "train.h5", n=n, image_size=8, class_names=["a", "b", "c"], labelled=True,
                     preprocessing={}, source_fingerprint="") as writer:
        sink = split_sink.SplitSink(writer, labelled=True, track_mean=True)
        row = 0
        while row < n:
            size = min(int(rng.choice([0, 1, 63, 64, 64, 64])), n - row)
            block = reused[:size]
            block[...] = images[row : row + size]
            sink.add(block, ids[row : row + size], labels[row : row + size], channel_sums(block))
            reused[...] = 0
            row += size
        sink.finish()
    got_images, got_labels, got_ids = read_arrays(tmp_path / "train.h5")
    assert np.array_equal(got_images, images) and got_labels.tolist() == labels and got_ids == ids
    assert sink.written == n and np.array_equal(sink.pixel_sum, channel_sums(images))
