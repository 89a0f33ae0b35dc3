"""Images/s of `longtail ingest` against the classic single-process loop and parallel decode alone.

All three turn the same folder of 256x256 JPEGs (Fashion-MNIST, upscaled, 10 class folders) into
32x32 RGB uint8:
- (a) reference: one process, cv2.imread + cv2.resize + BGR->RGB per file, rows buffered and
  written to HDF5 1,000 at a time (pyimagesearch's HDF5DatasetWriter pattern);
- (b) longtail.ingest.ingest: listing, split plan, parallel decode, streamed chunked writes,
  write-then-rename, ingest.json;
- (c) the limit: the same read + decode + resize as ingest in a process pool, results dropped.
Each is timed end to end (pool start-up included), best of --repeats, after one untimed pass
that warms the page cache. The machine may be shared: the load average is printed.
Run: python benchmarks/ingest.py [--images 5000] [--folder DIR]. The JPEGs are cached under
.longtail/bench/ (made once).
Targets (issue 2): b/a >= 1.6 and b/c >= 0.8 on 2 cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import h5py
import numpy as np

from longtail.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
from longtail.decode import PixelSettings, to_pixels
from longtail.ingest import ingest

SIZE = 32


def make_jpeg_folder(folder: Path, n: int) -> list[Path]:
    """n Fashion-MNIST training images as 256x256 3-channel JPEGs in class folders (made once)."""
    marker = folder / f".complete-{n}"
    if not marker.exists():
        data = load_fashion_mnist()
        for i in range(n):
            label = int(data["train_labels"][i])
            big = cv2.resize(data["train_images"][i], (256, 256), interpolation=cv2.INTER_CUBIC)
            out = folder / FASHION_MNIST_CLASSES[label] / f"{i:05d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), cv2.cvtColor(big, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        marker.touch()
    return sorted(p for p in folder.rglob("*.jpg"))


def reference_loop(folder: Path, out: Path) -> int:
    """(a) The classic pattern: one process, imread + resize, HDF5 writes in 1,000-row buffers."""
    paths = sorted(p for p in folder.rglob("*.jpg"))
    classes = sorted({p.parent.name for p in paths})
    with h5py.File(out, "w") as f:
        images = f.create_dataset("images", (len(paths), SIZE, SIZE, 3), dtype=np.uint8)
        labels = f.create_dataset("labels", (len(paths),), dtype=np.int32)
        buf_x, buf_y, start = [], [], 0
        for p in paths:
            image = cv2.imread(str(p))
            image = cv2.cvtColor(cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            buf_x.append(image)
            buf_y.append(classes.index(p.parent.name))
            if len(buf_x) == 1000:
                images[start : start + 1000], labels[start : start + 1000] = buf_x, buf_y
                start, buf_x, buf_y = start + 1000, [], []
        if buf_x:
            images[start:], labels[start:] = buf_x, buf_y
    return len(paths)


_SETTINGS = PixelSettings(image_size=SIZE)


def _decode_file(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        return to_pixels(f.read(), _SETTINGS)


def parallel_decode(folder: Path, workers: int) -> int:
    """(c) The limit: ingest's read + decode + resize over the files in a pool, nothing written."""
    paths = [str(p) for p in sorted(folder.rglob("*.jpg"))]
    ctx = multiprocessing.get_context("forkserver")  # as ingest: fork after OpenCV's threads ran can hang
    ctx.set_forkserver_preload(["longtail.ingest"])
    with ctx.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        for _ in pool.imap_unordered(_decode_file, paths, chunksize=64):
            pass
    return len(paths)


def longtail_ingest(folder: Path, out: Path, workers: int) -> int:
    """(b) longtail ingest, end to end."""
    return ingest(str(folder), out, image_size=SIZE, workers=workers)["n_images"]


def best_rate(run: Callable[[], int], repeats: int) -> float:
    """Images/s of the fastest of `repeats` timed runs."""
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        n = run()
        best = max(best, n / (time.perf_counter() - t))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--folder", type=Path, default=Path(".longtail/bench/fashion-jpeg-256"))
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = make_jpeg_folder(args.folder, args.images)
    for p in paths:  # warm the page cache so no contender pays the first disk read
        p.read_bytes()
    print(f"{len(paths)} JPEGs 256x256 in {args.folder} -> {SIZE}x{SIZE}, {args.workers} workers, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        import contextlib
        import io

        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:
            longtail_ingest(args.folder, Path(tmp) / "warm", args.workers)
        a = best_rate(lambda: reference_loop(args.folder, Path(tmp) / "ref.h5"), args.repeats)
        with quiet:
            b = best_rate(lambda: longtail_ingest(args.folder, Path(tmp) / "out", args.workers), args.repeats)
        c = best_rate(lambda: parallel_decode(args.folder, args.workers), args.repeats)
    print(f"(a) reference loop (imread + resize + HDF5, 1 process) {a:9.0f} images/s")
    print(f"(b) longtail ingest                                    {b:9.0f} images/s")
    print(f"(c) parallel decode + resize, no writing (limit)       {c:9.0f} images/s")
    print(f"b/a = {b / a:.2f} (target >= 1.6)   b/c = {b / c:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
