"""Scaled-LT: a deterministic scraped-looking folder at the seed's scale (209 classes, 108,764 images) from Fashion-MNIST.

The seed log (docs/seed-log.md "EXP3") fetches 209 classes and 108,764 labelled images from EXP3 on, with class weights up to
687 (a largest/smallest class ratio near 600). This module builds a folder of that shape from real
images a package ships: each class is one Fashion-MNIST category drawn in one colour over one
background pattern (10 categories x 14 colours x 3 patterns, 420 classes at most), so classes
differ the way scraped product classes do (same object, other colour/style). Every image is one
Fashion-MNIST item, rescaled, placed, flipped and shaded at random onto a canvas of random size
around `source_size`, saved as JPEG (varied quality) or PNG.

Layout, as `longtail data fashion-mnist-lt` writes it:
- `OUT/train/<class>/<id>.jpg|png`: the long-tailed labelled images (training items of Fashion-MNIST);
- `OUT/test/<id>.jpg|png`: balanced and unlabelled, with ids that do not reveal the class (drawn
  from Fashion-MNIST's t10k items, so no test image shares its item with a training image);
- `OUT/test_labels.csv` (`id,label`), held out; `OUT/dataset.json`, the summary, written last.

Each image depends only on (seed, split, class, index): the output is the same whatever the number
of worker processes, and memory stays flat in the number of images (workers write the files).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from longtail.data_folder import TEST_LABELS_FILE
from longtail.datasets import (
    FASHION_MNIST_CLASSES,
    SUMMARY_FILE,
    check_output_folder,
    load_fashion_mnist,
    publish_folder,
)
from longtail.errors import DataError

log = logging.getLogger(__name__)

DATASET_NAME = "scaled-lt"
# The seed log from EXP3 on (docs/seed-log.md "EXP3"): 209 classes, 108,764 labelled images (87,011 train + 21,753 val).
SEED_CLASSES = 209
SEED_IMAGES = 108_764
# Largest / smallest class: the seed's inverse-frequency class weights reach 687.
SEED_IMBALANCE = 600.0
# Balanced test images per class, as a share of the labelled images per class on average (the
# seed's val share), so the test set grows with N like everything else.
TEST_SHARE = 0.2
COLOURS = {  # BGR, as cv2 writes them
    "red": (40, 40, 220), "blue": (200, 90, 30), "green": (60, 170, 50), "yellow": (30, 210, 235),
    "purple": (150, 50, 130), "orange": (20, 130, 245), "black": (35, 35, 35), "pink": (180, 130, 250),
    "teal": (150, 150, 20), "brown": (40, 75, 130), "grey": (140, 140, 140), "navy": (100, 30, 20),
    "olive": (30, 120, 120), "white": (245, 245, 245),
}
PATTERNS = ("plain", "striped", "gradient")
MAX_CLASSES = len(FASHION_MNIST_CLASSES) * len(COLOURS) * len(PATTERNS)
PNG_SHARE = 0.2
# The chunk of jobs a worker takes at a time: big enough to amortise the IPC, small enough to keep
# both cores busy to the end.
CHUNK = 64


def scaled_counts(n_images: int, n_classes: int, imbalance: float = SEED_IMBALANCE) -> list[int]:
    """Images per class on an exponential profile (largest/smallest = `imbalance`) summing to `n_images`.

    Class c gets a share proportional to imbalance^(-c / (C - 1)), rounded by largest remainder;
    every class keeps at least 2 images (one for train, one for val), so at small N the ratio
    falls below `imbalance`.

    Raises:
        DataError: fewer than 2 images per class, or imbalance < 1.
    """
    if not imbalance >= 1.0:
        raise DataError(f"--imbalance must be >= 1 (largest/smallest class), got {imbalance}")
    if n_images < 2 * n_classes:
        raise DataError(f"--images {n_images} is too few for {n_classes} classes: give at least {2 * n_classes}")
    shares = imbalance ** (-np.arange(n_classes) / max(n_classes - 1, 1))
    ideal = n_images * shares / shares.sum()
    counts = np.maximum(np.floor(ideal).astype(np.int64), 2)
    order = np.argsort(-(ideal - np.floor(ideal)), kind="stable")
    i = 0
    while counts.sum() < n_images:
        counts[order[i % n_classes]] += 1
        i += 1
    while counts.sum() > n_images:  # the floor of 2 overshot: take it back from the head
        counts[np.argmax(counts)] -= 1
    return [int(c) for c in counts]


def class_styles(n_classes: int) -> list[tuple[int, str, str]]:
    """(Fashion-MNIST category, colour, pattern) of each class, in class-name order of creation.

    The first classes use every category in every colour on a plain background, then striped, then
    gradient, so any prefix of the list is as varied as it can be.
    """
    if not 1 <= n_classes <= MAX_CLASSES:
        raise DataError(f"--classes must be between 1 and {MAX_CLASSES}, got {n_classes}")
    colours = list(COLOURS)
    styles = []
    for c in range(n_classes):
        variant, category = divmod(c, len(FASHION_MNIST_CLASSES))
        pattern, colour = divmod(variant, len(colours))
        styles.append((category, colours[colour], PATTERNS[pattern]))
    return styles


def class_name(style: tuple[int, str, str]) -> str:
    """`red_sneaker_striped`: the folder name of a class."""
    category, colour, pattern = style
    return f"{colour}_{FASHION_MNIST_CLASSES[category]}_{pattern}"


def render_image(item: np.ndarray, style: tuple[int, str, str], rng: np.random.Generator, source_size: int) -> np.ndarray:
    """One BGR uint8 image: a 28x28 Fashion-MNIST `item` in the class's colour over its background.

    The canvas is 0.7-1.3x `source_size` with an aspect ratio in [3/4, 4/3]; the item fills 55-90%
    of its short side at a random place, maybe mirrored; colour and background vary a little.
    """
    _, colour_name, pattern = style
    scale = rng.uniform(0.7, 1.3) * source_size
    aspect = np.sqrt(rng.uniform(0.75, 4.0 / 3.0))
    w, h = max(int(scale * aspect), 16), max(int(scale / aspect), 16)
    # A light, slightly tinted backdrop: the class's pattern, not its colour, is drawn on it.
    base = np.clip(rng.uniform(140, 225) + rng.uniform(-15, 15, size=3), 0, 255).astype(np.float32)
    canvas = _background(pattern, h, w, base, rng)
    side = max(int(min(h, w) * rng.uniform(0.55, 0.9)), 8)
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    shape = cv2.resize(item, (side, side), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        shape = cv2.flip(shape, 1)
    # The item's own grey levels shade the colour (25% at its darkest, 100% at its brightest).
    colour = np.clip(np.array(COLOURS[colour_name], np.float32) * rng.uniform(0.85, 1.15), 0, 255)
    lut = np.clip(colour[None, :] * (0.25 + 0.75 * np.arange(256, dtype=np.float32)[:, None] / 255), 0, 255)
    fg = cv2.LUT(cv2.merge([shape, shape, shape]), lut.astype(np.uint8).reshape(256, 1, 3))
    # Fashion-MNIST's background is black: any ink is the item, so ink above 48 is opaque.
    weight = np.minimum(shape.astype(np.float32) * (1.0 / 48.0), 1.0)
    region = np.ascontiguousarray(canvas[y0:y0 + side, x0:x0 + side])
    canvas[y0:y0 + side, x0:x0 + side] = cv2.blendLinear(fg, region, weight, 1.0 - weight)
    return canvas


def _background(pattern: str, h: int, w: int, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plain, striped (horizontal, random period and phase) or gradient (left or right) canvas."""
    if pattern == "plain":
        return np.full((h, w, 3), base.astype(np.uint8), dtype=np.uint8)
    if pattern == "striped":
        period = rng.uniform(10, 24) * max(h, w) / 256
        rows = np.sin(2 * np.pi * (np.arange(h) / period + rng.random())) > 0
        line = np.where(rows[:, None], (base * 0.6).astype(np.uint8)[None, :], base.astype(np.uint8)[None, :])
        return np.ascontiguousarray(np.broadcast_to(line[:, None, :], (h, w, 3)))
    ramp = np.linspace(0.45, 1.1, w, dtype=np.float32)
    if rng.random() < 0.5:
        ramp = ramp[::-1]
    line = np.clip(ramp[:, None] * base[None, :], 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(line[None, :, :], (h, w, 3)))


def encode_image(image: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """JPEG (quality 70-95) for most images, PNG for `PNG_SHARE` of them: (bytes, extension)."""
    if rng.random() < PNG_SHARE:
        ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        ext = ".png"
    else:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
        ext = ".jpg"
    if not ok:
        raise DataError(f"cannot encode a {image.shape} image as {ext}")
    return data.tobytes(), ext


# Set by _init_worker in each process that renders: the items and the job parameters (read-only).
_ITEMS: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
_JOB: dict[str, Any] = {}


def _init_worker(job: dict[str, Any], source_dir: str | Path | None) -> None:
    """Load the source items and the job's parameters into this process.

    Workers start from a fresh interpreter (forkserver), never by forking the caller: a caller
    that has started threads (TensorFlow, a test runner) would deadlock the forked children.
    """
    cv2.setNumThreads(1)
    _set_items(load_fashion_mnist(source_dir), job)


def _set_items(arrays: dict[str, np.ndarray], job: dict[str, Any]) -> None:
    """This process's items by split and category, and the job's parameters."""
    _ITEMS.update({
        "train": (arrays["train_images"], [np.flatnonzero(arrays["train_labels"] == k) for k in range(10)]),
        "test": (arrays["test_images"], [np.flatnonzero(arrays["test_labels"] == k) for k in range(10)]),
    })
    _JOB.update(job)


def _render_job(job: tuple[str, int, int, str]) -> int:
    """Render and write one image; returns its size in bytes."""
    split, c, i, stem = job
    seed, source_size, styles, root = _JOB["seed"], _JOB["source_size"], _JOB["styles"], _JOB["root"]
    images, by_category = _ITEMS[split]
    style = styles[c]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, c, i])
    pool = by_category[style[0]]
    item = images[pool[int(rng.integers(len(pool)))]]
    data, ext = encode_image(render_image(item, style, rng, source_size), rng)
    folder = root / "train" / class_name(style) if split == "train" else root / "test"
    (folder / f"{stem}{ext}").write_bytes(data)
    return len(data)


def _jobs(counts: list[int], test_ids: np.ndarray, test_per_class: int) -> Iterator[tuple[str, int, int, str]]:
    """Every image to make, lazily: train by class, then test in id order (test slot j is image
    j % test_per_class of class j // test_per_class, saved as test_ids[j])."""
    for c, n in enumerate(counts):
        for i in range(n):
            yield "train", c, i, f"{c:03d}{i:05d}"
    for j in np.argsort(test_ids, kind="stable"):
        c, i = divmod(int(j), test_per_class)
        yield "test", c, i, f"{int(test_ids[j]):06d}"


def make_scaled_lt(
    out_dir: str | Path,
    *,
    classes: int = SEED_CLASSES,
    images: int = SEED_IMAGES,
    source_size: int = 256,
    seed: int = 0,
    imbalance: float = SEED_IMBALANCE,
    test_per_class: int | None = None,
    workers: int | None = None,
    source_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write a scaled-LT folder: `images` long-tailed labelled images over `classes` classes plus a balanced test set.

    Args:
        images: labelled images (train/ holds them all; ingest splits off val).
        source_size: the typical canvas side in pixels (each image is 0.7-1.3x of it).
        imbalance: largest / smallest class (reached when every class can keep >= 2 images).
        test_per_class: balanced test images per class; default `TEST_SHARE` x images / classes.
        workers: processes that render (default: every CPU).
        source_dir: folder with Fashion-MNIST's IDX files ($LONGTAIL_DATA, read by the caller).

    Returns:
        The summary also written to OUT/dataset.json: class_names, class_counts, n_train, n_test, ...
    """
    styles = class_styles(classes)
    counts = scaled_counts(images, classes, imbalance)
    if source_size < 16:
        raise DataError(f"--source-size must be >= 16 pixels, got {source_size}")
    if test_per_class is None:
        test_per_class = max(1, round(TEST_SHARE * images / classes))
    if test_per_class < 1:
        raise DataError(f"test_per_class must be >= 1, got {test_per_class}")
    if workers is not None and workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")
    out = check_output_folder(out_dir)
    arrays = load_fashion_mnist(source_dir)  # here, so a missing source fails (or downloads) before any worker
    rng = np.random.default_rng(seed)
    # Which class is the head is the seed's choice, not always the first category's.
    order = rng.permutation(classes)
    class_counts = np.zeros(classes, dtype=np.int64)
    class_counts[order] = counts
    test_ids = rng.permutation(classes * test_per_class)
    names = [class_name(s) for s in styles]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    job = {"seed": seed, "source_size": source_size, "styles": styles, "root": tmp}
    try:
        for name in names:
            (tmp / "train" / name).mkdir(parents=True)
        (tmp / "test").mkdir()
        start = time.perf_counter()
        jobs = _jobs([int(n) for n in class_counts], test_ids, test_per_class)
        n_workers = workers or os.cpu_count() or 1
        if n_workers == 1:
            _set_items(arrays, job)
            n_bytes = sum(map(_render_job, jobs))
        else:
            with multiprocessing.get_context("forkserver").Pool(
                    n_workers, initializer=_init_worker, initargs=(job, source_dir)) as pool:
                n_bytes = sum(pool.imap_unordered(_render_job, jobs, chunksize=CHUNK))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id", "label"])
        for j in np.argsort(test_ids, kind="stable"):
            writer.writerow([f"{int(test_ids[j]):06d}", names[int(j) // test_per_class]])
        (tmp / TEST_LABELS_FILE).write_text(buf.getvalue())
        n_train, n_test = int(class_counts.sum()), classes * test_per_class
        summary = {
            "dataset": DATASET_NAME,
            "imbalance": float(class_counts.max() / class_counts.min()),
            "seed": int(seed),
            "source_size": int(source_size),
            "class_names": names,
            "class_counts": {names[c]: int(class_counts[c]) for c in range(classes)},
            "n_train": n_train,
            "n_test": int(n_test),
            "bytes": int(n_bytes),
        }
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        publish_folder(tmp, out)
        log.info("scaled-lt: %d images (%d test) in %.1f s, %.0f MB", n_train + n_test, n_test,
                 time.perf_counter() - start, n_bytes / 2**20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _ITEMS.clear()
        _JOB.clear()
    return {**summary, "out_dir": str(out)}
