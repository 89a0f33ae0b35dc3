"""Real tiny training data: scikit-learn's digits as class-sorted HDF5 splits (16x16 RGB)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longtail.splits import write_split

CLASS_NAMES = [str(d) for d in range(10)]


@dataclass
class DigitsSplits:
    """train/val HDF5 paths and the arrays written into them."""

    train_h5: Path
    val_h5: Path
    train_images: np.ndarray
    train_labels: np.ndarray


def write_digits_splits(
    root: Path,
    *,
    n_train: int = 600,
    n_val: int = 200,
    colour: Callable[[np.ndarray], np.ndarray] | None = None,
    clahe: bool = False,
    white_balance: bool = False,
    val_class_names: list[str] | None = None,
) -> DigitsSplits:
    """Write digits as train/val splits, rows sorted by class (as ingesting class folders gives).

    Args:
        colour: a per-image uint8 operation applied before writing (CLAHE, white balance).
        clahe, white_balance: what the files' `preprocessing` attribute records.
        val_class_names: write the val split with other class names (mismatch tests).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)
    grey = np.kron(grey, np.ones((2, 2), np.uint8))  # 8x8 -> 16x16
    rgb = np.stack([grey, (grey * 0.8).astype(np.uint8), (grey * 0.6).astype(np.uint8)], axis=-1)
    if colour is not None:
        rgb = np.stack([colour(im) for im in rgb])
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(rgb))
    tr, va = order[:n_train], order[n_train: n_train + n_val]
    tr, va = tr[np.argsort(labels[tr], kind="stable")], va[np.argsort(labels[va], kind="stable")]
    pre = {"image_size": 16, "resize": "stretch", "clahe": clahe, "white_balance": white_balance}
    common = dict(image_size=16, preprocessing=pre, source_fingerprint="sklearn-digits")
    mean = rgb[tr].reshape(-1, 3).mean(axis=0).tolist()
    root.mkdir(parents=True, exist_ok=True)
    train_h5 = write_split(root / "train.h5", rgb[tr], [f"d{i}" for i in tr], labels=labels[tr],
                           mean_rgb=mean, class_names=CLASS_NAMES, **common)
    val_h5 = write_split(root / "val.h5", rgb[va], [f"d{i}" for i in va], labels=labels[va],
                         class_names=val_class_names or CLASS_NAMES, **common)
    return DigitsSplits(train_h5, val_h5, rgb[tr], labels[tr])
