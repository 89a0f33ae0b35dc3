"""Batches/s of the HDF5 -> tf.data loader against the classic h5py generator and in-memory from_tensor_slices.

All deliver the same thing: shuffled batches of (float32 (x - mean_rgb) / 255 images, int labels)
from one train split, consumed as fast as possible.
- reference: the classic HDF5 generator (pyimagesearch's HDF5DatasetGenerator): consecutive h5py
  slices, each image through the preprocessors in a Python loop, via from_generator;
- the same generator with the scaling vectorised per batch (a stronger reference, printed for honesty);
- limit: in-memory from_tensor_slices, shuffled per row, batched, scaled in the graph.
The machine may be shared: wall-clock batches/s and process CPU ms per batch are both printed.
Run: python benchmarks/loader.py [TRAIN_H5] [--batch 128]. Without TRAIN_H5 it writes Fashion-MNIST's
60000 training images (28x28) as a split in a temp folder.
Targets (issue 3): loader >= 0.9x in-memory and >= 2x the generator.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from longtail.datasets import load_fashion_mnist
from longtail.input_pipeline import make_dataset
from longtail.preprocessing import Preprocessing
from longtail.splits import read_info, write_split


def fashion_mnist_split(folder: Path) -> Path:
    """Fashion-MNIST's training images as a longtail split (grey as RGB)."""
    data = load_fashion_mnist()
    images = np.repeat(data["train_images"][..., None], 3, axis=-1)
    labels = data["train_labels"].astype(np.int32)
    return write_split(folder / "train.h5", images, [str(i) for i in range(len(images))],
                       class_names=[str(c) for c in range(10)], image_size=28, labels=labels,
                       preprocessing={"image_size": 28}, source_fingerprint="fashion-mnist",
                       mean_rgb=images.reshape(-1, 3).mean(axis=0).tolist())


def generator_dataset(path: Path, batch: int, pre: Preprocessing, *, vectorised: bool = False) -> tf.data.Dataset:
    """The classic HDF5 generator over consecutive h5py slices (batch order shuffled), via from_generator."""
    offset = pre.offset

    def preprocess(image: np.ndarray) -> np.ndarray:  # MeanPreprocessor + ImageToArrayPreprocessor
        return (image.astype(np.float32) - offset) / np.float32(255.0)

    def batches():
        with h5py.File(path, "r") as f:
            n = f["images"].shape[0]
            for s in np.random.permutation(np.arange(0, n - batch + 1, batch)):
                images, labels = f["images"][s: s + batch], f["labels"][s: s + batch]
                if vectorised:
                    yield preprocess(images), labels
                else:
                    yield np.array([preprocess(im) for im in images]), labels

    size = read_info(path, with_labels=False).image_size
    return tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec((None, size, size, 3), tf.float32), tf.TensorSpec((None,), tf.int32))).prefetch(tf.data.AUTOTUNE)


def in_memory_dataset(path: Path, batch: int, pre: Preprocessing) -> tf.data.Dataset:
    """The limit: the whole split as tensors, shuffled per row, batched, scaled in the graph."""
    with h5py.File(path, "r") as f:
        images, labels = f["images"][:], f["labels"][:]
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images)).batch(batch, drop_remainder=True)
    return ds.map(lambda x, y: (pre.to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def measure(make: Callable[[], tf.data.Dataset], epochs: int) -> tuple[float, float]:
    """(batches/s wall-clock, process CPU ms per batch) over `epochs` passes after one warm-up pass."""
    ds = make()
    for _ in ds:
        pass
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for _ in ds:
            n += 1
    return n / (time.perf_counter() - wall), 1e3 * (time.process_time() - cpu) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_h5", nargs="?", help="a train split (default: Fashion-MNIST, written to a temp dir)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="timed passes per loader")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.train_h5) if args.train_h5 else fashion_mnist_split(Path(tmp))
        info = read_info(path)
        pre = Preprocessing.from_split(info, "mean_subtraction")
        b = args.batch
        print(f"split {path}: {info.n} images {info.image_size}x{info.image_size}, batch {b}, {args.epochs} passes, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        loaders = {
            "longtail (in memory)": lambda: make_dataset(path, pre, batch_size=b, training=True,
                                                         augmentation=None).dataset,
            "longtail (streamed)": lambda: make_dataset(path, pre, batch_size=b, training=True, augmentation=None,
                                                        memory_budget_mb=0).dataset,
            "h5py generator (classic)": lambda: generator_dataset(path, b, pre),
            "h5py generator (vectorised)": lambda: generator_dataset(path, b, pre, vectorised=True),
            "in-memory from_tensor_slices": lambda: in_memory_dataset(path, b, pre),
        }
        results = {name: measure(make, args.epochs) for name, make in loaders.items()}
    for name, (rate, cpu) in results.items():
        print(f"{name:30s} {rate:9.1f} batches/s  {cpu:6.3f} CPU ms/batch")
    limit, reference, strong = (results[k] for k in ("in-memory from_tensor_slices", "h5py generator (classic)",
                                                      "h5py generator (vectorised)"))
    for name in ("longtail (in memory)", "longtail (streamed)"):
        rate, cpu = results[name]
        print(f"{name:30s} wall: {rate / limit[0]:5.2f}x in-memory (target >= 0.9), {rate / reference[0]:5.2f}x classic "
              f"generator (target >= 2), {rate / strong[0]:5.2f}x vectorised generator | CPU per batch: "
              f"{limit[1] / cpu:5.2f}x in-memory, {reference[1] / cpu:5.2f}x classic, {strong[1] / cpu:5.2f}x vectorised")


if __name__ == "__main__":
    main()
