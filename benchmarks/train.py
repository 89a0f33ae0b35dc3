"""Images/s of `longtail train` against plain model.fit on in-memory arrays: same model, same optimizer.

Both train the model of CONFIG (default experiments/demo.yaml) for a few epochs on a Fashion-MNIST
split; images/s is the median over epochs after the first (tracing), training phase only (longtail's
per-epoch validation is timed apart, as TrainResult.images_per_second does). Augmentation and class
weights are off in the comparable run, then longtail is timed again with mixup on (alpha 0.2, the batch
mixing of the long-tail methods) and with the config's augmentation.
Runs alternate (plain, longtail, plain, longtail, ...) so a shared machine's load hits both alike.
Run: python benchmarks/train.py [--config experiments/demo.yaml] [--images 6000] [--epochs 3] [--repeats 2]
Target: longtail >= 0.9x plain fit, also with mixup on.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from longtail.config import ExperimentConfig, load_config
from longtail.datasets import load_fashion_mnist
from longtail.preprocessing import Preprocessing
from longtail.splits import read_arrays, read_info, write_split
from longtail.training import make_loss, make_optimizer, train


def fashion_mnist_splits(folder: Path, n_train: int) -> tuple[Path, Path]:
    """The first n_train Fashion-MNIST training images as train.h5, the next 1000 as val.h5."""
    data = load_fashion_mnist()
    images = np.repeat(data["train_images"][..., None], 3, axis=-1)
    labels = data["train_labels"].astype(np.int32)
    common = dict(class_names=[str(c) for c in range(10)], image_size=28, preprocessing={"image_size": 28},
                  source_fingerprint="fashion-mnist")
    tr, va = slice(0, n_train), slice(n_train, n_train + 1000)
    train_h5 = write_split(folder / "train.h5", images[tr], [str(i) for i in range(n_train)], labels=labels[tr],
                           mean_rgb=images[tr].reshape(-1, 3).mean(axis=0).tolist(), **common)
    val_h5 = write_split(folder / "val.h5", images[va], [str(i) for i in range(1000)], labels=labels[va], **common)
    return train_h5, val_h5


def plain_fit(config: ExperimentConfig, train_h5: Path) -> float:
    """model.fit on float32 arrays already in memory; images/s (median of epochs after the first)."""
    import keras

    from longtail.models import build_model  # these two import Keras: only here
    from longtail.training.callbacks import EpochTimer

    info = read_info(train_h5)
    images, labels, _ = read_arrays(train_h5)
    x = Preprocessing.from_split(info, config.preprocess.scale).to_float(images)
    keras.utils.set_random_seed(config.train.seed)
    t = config.train
    model = build_model(config.model.name, x.shape[1:], len(info.class_names), **config.model.args)
    model.compile(optimizer=make_optimizer(t.optimizer, t.lr.initial), loss=make_loss(t, info.class_counts()),
                  metrics=["accuracy"], jit_compile=False)
    timer = EpochTimer()
    model.fit(x, labels, batch_size=t.batch_size, epochs=t.epochs, shuffle=True, verbose=0, callbacks=[timer])
    per_epoch = len(x) // t.batch_size * t.batch_size
    return per_epoch / float(np.median(timer.seconds[1:] or timer.seconds))


def longtail_fit(config: ExperimentConfig, train_h5: Path, val_h5: Path, out: Path) -> float:
    """`longtail train` (the library function behind the CLI) without tracking; its images/s."""
    return train(config, train_h5, val_h5, out, progress=False).images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).parents[1] / "experiments" / "demo.yaml"))
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    common = [f"train.epochs={args.epochs}", "weights.scheme=none"]
    no_aug = ["train.augmentation.flip=false", "train.augmentation.shift=0", "train.augmentation.cutmix=0"]
    same = load_config(args.config, common + no_aug + ["train.augmentation.mixup=0"])
    mixed = load_config(args.config, common + no_aug + ["train.augmentation.mixup=0.2"])
    augmented = load_config(args.config, common)
    rates: dict[str, list[float]] = {"plain model.fit": [], "longtail train": [], "longtail train + mixup": [],
                                     "longtail train + augmentation": []}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_h5, val_h5 = fashion_mnist_splits(Path(tmp), args.images)
        print(f"{same.model.name} {same.model.args}, {args.images} images 28x28, batch {same.train.batch_size}, "
              f"{args.epochs} epochs x {args.repeats} repeats, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        for r in range(args.repeats):
            rates["plain model.fit"].append(plain_fit(same, train_h5))
            rates["longtail train"].append(longtail_fit(same, train_h5, val_h5, Path(tmp) / f"m{r}"))
            rates["longtail train + mixup"].append(longtail_fit(mixed, train_h5, val_h5, Path(tmp) / f"x{r}"))
            rates["longtail train + augmentation"].append(
                longtail_fit(augmented, train_h5, val_h5, Path(tmp) / f"a{r}"))
    best = {name: max(values) for name, values in rates.items()}
    for name, values in rates.items():
        print(f"{name:32s} {best[name]:8.1f} images/s (runs: {', '.join(f'{v:.1f}' for v in values)})")
    plain = best["plain model.fit"]
    print(f"longtail train / plain fit:                {best['longtail train'] / plain:5.2f}x (target >= 0.9)")
    print(f"longtail train + mixup / plain fit:        {best['longtail train + mixup'] / plain:5.2f}x (target >= 0.9)")
    print(f"longtail train + augmentation / plain fit: {best['longtail train + augmentation'] / plain:5.2f}x")
    print(f"({time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
