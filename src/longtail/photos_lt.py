"""photos-lt: a small long-tailed folder of colour photos, the case a new user brings first.

A few hundred images in 8 classes, each class a region of one of the two colour photos scikit-learn
ships (`sklearn.datasets.load_sample_images`: a pagoda over a lake, a dahlia), so nothing is
downloaded. Every image is a random crop of its class's region (a quarter to all of the region's
shorter side, anywhere inside it), resized to SIDE px and recoloured (per-channel gain, brightness
and saturation), so no two images are the same picture.

What it is for: a panel row (benchmarks/panel.py) with very few images (5 in the rarest class at the
default imbalance) and very few steps an epoch (2 at batch 128), where advice tuned on 12k images
meets a small folder. What it is not: a test of recognising new photos. Test crops come from the same
regions as the training crops (other crops, other colours), so absolute figures run high; compare
configs on it, not against other datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

# Each class: (photo, (x0, y0, x1, y1)) in the photo's pixels (both photos are 640x427).
REGIONS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "pagoda_roofs": ("china.jpg", (90, 60, 330, 200)),
    "sky": ("china.jpg", (340, 0, 640, 170)),
    "trees": ("china.jpg", (340, 300, 640, 427)),
    "lake": ("china.jpg", (340, 215, 560, 295)),
    "dahlia": ("flower.jpg", (180, 100, 440, 340)),
    "pagoda_base": ("china.jpg", (60, 240, 350, 390)),
    "dark_leaves": ("flower.jpg", (0, 0, 160, 427)),
    "dahlia_bud": ("flower.jpg", (280, 365, 480, 427)),
}
PHOTOS_CLASSES = list(REGIONS)  # the head first: class c keeps n_max * imbalance^(-c/7) images
SIDE = 64  # the side of every written image, px


def _photos() -> dict[str, np.ndarray]:
    """scikit-learn's sample photos by file name, RGB uint8."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return {Path(name).name: image for name, image in zip(bunch.filenames, bunch.images, strict=True)}


def render_crop(photo: np.ndarray, region: tuple[int, int, int, int], rng: np.random.Generator) -> np.ndarray:
    """One image of a class: a random square crop inside `region`, SIDE x SIDE, recoloured; BGR uint8."""
    x0, y0, x1, y1 = region
    short = min(x1 - x0, y1 - y0)
    side = int(rng.uniform(0.25, 1.0) * short) if short > 64 else short
    side = max(side, min(32, short))
    x = int(rng.integers(x0, x1 - side + 1))
    y = int(rng.integers(y0, y1 - side + 1))
    crop = cv2.resize(photo[y:y + side, x:x + side], (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    grey = crop.mean(axis=2, keepdims=True)
    saturation = rng.uniform(0.7, 1.3)
    crop = grey + saturation * (crop - grey)
    crop = crop * rng.uniform(0.85, 1.15, size=3) * rng.uniform(0.8, 1.2)
    rgb = np.clip(np.round(crop), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])  # cv2 writes BGR


def make_photos_lt(out_dir: str | Path, imbalance: float = 20.0, seed: int = 0, *, n_max: int = 100,
                   test_per_class: int = 30) -> dict[str, Any]:
    """Write OUT/train/<class>/<id>.png (long-tailed: 100 ... 5 at imbalance 20), OUT/test/ (balanced) and
    OUT/test_labels.csv, as the other `longtail data` sets.

    Returns:
        The summary also written to OUT/dataset.json.
    """
    from longtail.datasets import _write_long_tail  # one writer for every demo set

    photos = _photos()
    rng = np.random.default_rng(seed)
    n_classes = len(PHOTOS_CLASSES)

    def crops(per_class: int) -> np.ndarray:
        return np.stack([render_crop(photos[REGIONS[name][0]], REGIONS[name][1], rng)
                         for name in PHOTOS_CLASSES for _ in range(per_class)])

    train_images, test_images = crops(n_max), crops(test_per_class)  # in this order: the seed's draws
    return _write_long_tail(
        out_dir,
        name="photos-lt",
        class_names=PHOTOS_CLASSES,
        train=(train_images, np.repeat(np.arange(n_classes), n_max)),
        test=(test_images, np.repeat(np.arange(n_classes), test_per_class)),
        n_max=n_max,
        test_per_class=test_per_class,
        imbalance=imbalance,
        seed=seed,
    )
