"""Real data and real tiny models for evaluation/prediction tests: scikit-learn's digits as HDF5 splits."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longtail.model_dir import MODEL_FILE, ModelDir
from longtail.preprocessing import Preprocessing
from longtail.splits import write_split

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
INGEST = {"image_size": 8, "resize": "stretch", "clahe": False, "white_balance": False}


@dataclass
class DigitsData:
    """train/val/test splits of the digits (8x8, grey as RGB) and the held-out test labels."""

    root: Path
    train_h5: Path
    val_h5: Path
    test_h5: Path
    test_labels_csv: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    mean_rgb: list[float]
    test_ids: list[str]
    test_labels: np.ndarray


def make_digits(root: Path, *, seed: int = 0) -> DigitsData:
    """Write the digits as longtail splits; the test split's rows are in shuffled (not id) order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    images = np.repeat(grey[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(images))
    tr, va, te = order[:1100], order[1100:1450], order[1450:]
    mean_rgb = images[tr].reshape(-1, 3).mean(axis=0).tolist()
    common = dict(class_names=CLASS_NAMES, image_size=8, preprocessing=INGEST, source_fingerprint="digits")
    root.mkdir(parents=True, exist_ok=True)
    train_h5 = write_split(root / "train.h5", images[tr], [f"train/{i}.png" for i in tr], labels=labels[tr], mean_rgb=mean_rgb, **common)
    val_h5 = write_split(root / "val.h5", images[va], [f"val/{i}.png" for i in va], labels=labels[va], **common)
    # Ids are zero-padded positions in a shuffled order, so sorted output differs from file order.
    test_ids = [f"{int(i):05d}" for i in te]
    test_h5 = write_split(root / "test.h5", images[te], [f"test/{i}.png" for i in test_ids], **common)
    labels_csv = root / "test_labels.csv"
    with labels_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        for i, y in sorted(zip(test_ids, labels[te], strict=True)):
            w.writerow([i, CLASS_NAMES[y]])
    return DigitsData(root, train_h5, val_h5, test_h5, labels_csv, images[tr], labels[tr], mean_rgb, test_ids, labels[te])


def train_model_dir(data: DigitsData, model_dir: Path, *, scale: str, epochs: int = 4, seed: int = 0) -> Path:
    """Train a small dense net on the digits through `Preprocessing.to_float` and save a model directory.

    Like every model in longtail's registry, it outputs logits: predict and evaluate apply the softmax.
    """
    import keras

    keras.utils.set_random_seed(seed)
    prep = Preprocessing(image_size=8, class_names=CLASS_NAMES, scale=scale, mean_rgb=data.mean_rgb)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(len(CLASS_NAMES)),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(prep.to_float(data.train_images), data.train_labels, epochs=epochs, batch_size=64, verbose=0)
    model_dir.mkdir(parents=True, exist_ok=True)
    ModelDir(model_dir).save_preprocessing(prep)
    model.save(model_dir / MODEL_FILE)
    (model_dir / "history.json").write_text(json.dumps({"accuracy": history.history["accuracy"]}))
    return model_dir
