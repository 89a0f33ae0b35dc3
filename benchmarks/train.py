"""Speed of `longtail train` against plain model.fit on in-memory arrays: same model, same optimizer.

Both train the model of CONFIG (default experiments/demo.yaml) for a few epochs on a Fashion-MNIST
split; each figure is the median over epochs after the first (tracing), training phase only (longtail's
per-epoch validation is timed apart, as TrainResult does), in wall images/s and in process CPU time per
image (every thread; a shared machine's load moves it far less than wall time).

The input section: augmentation and class weights off in the comparable run, then longtail again with
mixup on (alpha 0.2, the batch mixing of the long-tail methods) and with the config's augmentation.
Target: longtail >= 0.9x plain fit, also with mixup on.

The precision section (--sizes, default 28 and 64 px): plain fit and longtail train at float32 and at
mixed_bfloat16 (--precisions), plain fit also with the fused batch norm `longtail train` trains with
(longtail.models.fused_batch_norm; against longtail train it isolates the input pipeline's share), and longtail train in float32 with XLA-compiled steps (train.jit_compile
true, what `auto` picks on a CPU without AVX-512 in float32), Fashion-MNIST resized to each size (fewer images at larger
sizes, the same pixels). Target: longtail train in bfloat16 >= 1.5x plain float32 fit in CPU time per
image; longtail within 0.9x of plain fit at the same precision shows the speed is not lost to the input
pipeline.

Runs alternate (plain, longtail, plain, longtail, ...) so a shared machine's load hits both alike.
Run: python benchmarks/train.py [--config experiments/demo.yaml] [--images 6000] [--epochs 3] [--repeats 2]
     [--sections input,precision] [--sizes 28,64] [--precisions float32,mixed_bfloat16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from longtail.config import ExperimentConfig, load_config
from longtail.datasets import load_fashion_mnist
from longtail.preprocessing import Preprocessing
from longtail.splits import read_arrays, read_info, write_split
from longtail.training import make_loss, make_optimizer, train

PRECISIONS = ("float32", "mixed_bfloat16")
XLA_ROW = "longtail train float32 + XLA"
FUSED_ROW = "plain model.fit + fused BN"


@dataclass
class Speed:
    """One timed training: wall images/s and CPU milliseconds per image (medians over epochs after the first)."""

    images_per_s: float
    cpu_ms_per_image: float


def fashion_mnist_splits(folder: Path, n_train: int, size: int = 28) -> tuple[Path, Path]:
    """The first n_train Fashion-MNIST training images as train.h5, the next 1000 as val.h5, at size x size."""
    data = load_fashion_mnist()
    grey = data["train_images"][: n_train + 1000]
    if size != 28:
        grey = np.stack([cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR) for g in grey])
    images = np.repeat(grey[..., None], 3, axis=-1)
    labels = data["train_labels"][: n_train + 1000].astype(np.int32)
    common = dict(class_names=[str(c) for c in range(10)], image_size=size, preprocessing={"image_size": size},
                  source_fingerprint=f"fashion-mnist-{size}")
    tr, va = slice(0, n_train), slice(n_train, n_train + 1000)
    train_h5 = write_split(folder / "train.h5", images[tr], [str(i) for i in range(n_train)], labels=labels[tr],
                           mean_rgb=images[tr].reshape(-1, 3).mean(axis=0).tolist(), **common)
    val_h5 = write_split(folder / "val.h5", images[va], [str(i) for i in range(n_train, n_train + 1000)], labels=labels[va],
                         **common)
    return train_h5, val_h5


def plain_fit(config: ExperimentConfig, train_h5: Path, policy: str = "float32", fused: bool = False) -> Speed:
    """model.fit on float32 arrays already in memory, under the Keras dtype policy `policy`.

    `fused`: with the fused batch norm longtail train trains with, instead of Keras' BatchNormalization.
    """
    import keras

    from longtail.models import build_model  # these three import Keras: only here
    from longtail.models.fused_batch_norm import with_fused_batch_norm
    from longtail.training.callbacks import EpochTimer

    info = read_info(train_h5)
    images, labels, _ = read_arrays(train_h5)
    x = Preprocessing.from_split(info, config.preprocess.scale).to_float(images)
    keras.utils.set_random_seed(config.train.seed)
    t = config.train
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model(config.model.name, x.shape[1:], len(info.class_names), **config.model.args)
        if fused:
            model = with_fused_batch_norm(model)
        model.compile(optimizer=make_optimizer(t.optimizer, t.lr.initial), loss=make_loss(t, info.class_counts()),
                      metrics=["accuracy"], jit_compile=False)
        timer = EpochTimer()
        model.fit(x, labels, batch_size=t.batch_size, epochs=t.epochs, shuffle=True, verbose=0, callbacks=[timer])
    finally:
        keras.config.set_dtype_policy(previous)
    per_epoch = len(x) // t.batch_size * t.batch_size
    wall, cpu = (float(np.median(s[1:] or s)) for s in (timer.seconds, timer.cpu_seconds))
    return Speed(per_epoch / wall, 1000.0 * cpu / per_epoch)


def longtail_fit(config: ExperimentConfig, train_h5: Path, val_h5: Path, out: Path) -> Speed:
    """`longtail train` (the library function behind the CLI) without tracking."""
    result = train(config, train_h5, val_h5, out, progress=False)
    return Speed(result.images_per_second, result.cpu_ms_per_image)


def report(rows: dict[str, list[Speed]]) -> dict[str, Speed]:
    """Print each row's best run (fastest by CPU time) beside all its runs; return the best."""
    best = {name: min(runs, key=lambda r: r.cpu_ms_per_image) for name, runs in rows.items()}
    for name, runs in rows.items():
        b = best[name]
        print(f"  {name:42s} {b.images_per_s:7.1f} images/s  {b.cpu_ms_per_image:6.2f} CPU ms/image  "
              f"(runs: {', '.join(f'{r.images_per_s:.0f}/s {r.cpu_ms_per_image:.2f} ms' for r in runs)})")
    return best


def input_section(args: argparse.Namespace, tmp: Path) -> None:
    """longtail train against plain fit at float32: the input pipeline, mixup and augmentation."""
    common = [f"train.epochs={args.epochs}", "weights.scheme=none", "train.jit_compile=false"]  # as plain fit
    no_aug = ["train.augmentation.flip=false", "train.augmentation.shift=0", "train.augmentation.cutmix=0"]
    same = load_config(args.config, common + no_aug + ["train.augmentation.mixup=0"])
    mixed = load_config(args.config, common + no_aug + ["train.augmentation.mixup=0.2"])
    augmented = load_config(args.config, common)
    rows: dict[str, list[Speed]] = {"plain model.fit": [], "longtail train": [], "longtail train + mixup": [],
                                    "longtail train + augmentation": []}
    train_h5, val_h5 = fashion_mnist_splits(tmp, args.images)
    print(f"input: {same.model.name} {same.model.args}, {args.images} images 28x28, batch {same.train.batch_size}")
    for r in range(args.repeats):
        rows["plain model.fit"].append(plain_fit(same, train_h5))
        rows["longtail train"].append(longtail_fit(same, train_h5, val_h5, tmp / f"m{r}"))
        rows["longtail train + mixup"].append(longtail_fit(mixed, train_h5, val_h5, tmp / f"x{r}"))
        rows["longtail train + augmentation"].append(longtail_fit(augmented, train_h5, val_h5, tmp / f"a{r}"))
    best = report(rows)
    plain = best["plain model.fit"].images_per_s
    for name in ("longtail train", "longtail train + mixup", "longtail train + augmentation"):
        target = " (target >= 0.9)" if "augmentation" not in name else ""
        print(f"  {name} / plain fit (images/s): {best[name].images_per_s / plain:5.2f}x{target}")


def precision_section(args: argparse.Namespace, tmp: Path) -> None:
    """Plain fit and longtail train at float32 and mixed_bfloat16, at each size."""
    for size in args.sizes:
        n = max(args.batch * 4, round(args.images * (28 / size) ** 2))  # about the same pixels at every size
        train_h5, val_h5 = fashion_mnist_splits(tmp / f"p{size}", n, size)
        base = [f"train.epochs={args.epochs}", "weights.scheme=none", "train.augmentation.flip=false",
                "train.augmentation.shift=0", "train.augmentation.mixup=0", "train.augmentation.cutmix=0"]
        configs = {p: load_config(args.config, [*base, f"train.precision={p}", "train.jit_compile=false"])
                   for p in args.precisions}
        xla = load_config(args.config, [*base, "train.precision=float32", "train.jit_compile=true"])
        print(f"precision at {size}x{size}: {n} images, batch {xla.train.batch_size}")
        rows: dict[str, list[Speed]] = {f"{kind} {p}": [] for p in args.precisions
                                        for kind in ("plain model.fit", FUSED_ROW, "longtail train")}
        rows[XLA_ROW] = []
        for r in range(args.repeats):
            for p in args.precisions:
                rows[f"plain model.fit {p}"].append(plain_fit(configs[p], train_h5, p))
                rows[f"{FUSED_ROW} {p}"].append(plain_fit(configs[p], train_h5, p, fused=True))
                rows[f"longtail train {p}"].append(longtail_fit(configs[p], train_h5, val_h5, tmp / f"p{size}-{p}-{r}"))
            rows[XLA_ROW].append(longtail_fit(xla, train_h5, val_h5, tmp / f"p{size}-xla-{r}"))
        best = report(rows)
        reference = best["plain model.fit float32"].cpu_ms_per_image
        for p in args.precisions:
            lt, plain, fused = (best[f"{kind} {p}"] for kind in ("longtail train", "plain model.fit", FUSED_ROW))
            target = " (target >= 1.5)" if p != "float32" else ""
            print(f"  {size} px longtail train {p} / plain fit float32 (CPU time per image): "
                  f"{reference / lt.cpu_ms_per_image:5.2f}x{target}; / plain fit {p}: "
                  f"{plain.cpu_ms_per_image / lt.cpu_ms_per_image:5.2f}x; / {FUSED_ROW} {p} (the input pipeline's "
                  f"share): {fused.cpu_ms_per_image / lt.cpu_ms_per_image:5.2f}x")
        print(f"  {size} px {XLA_ROW} / plain fit float32 (CPU time per image): "
              f"{reference / best[XLA_ROW].cpu_ms_per_image:5.2f}x; / longtail train float32: "
              f"{best['longtail train float32'].cpu_ms_per_image / best[XLA_ROW].cpu_ms_per_image:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).parents[1] / "experiments" / "demo.yaml"))
    parser.add_argument("--images", type=int, default=6000, help="train images at 28 px (fewer at larger sizes)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sections", default="input,precision", help="comma-separated: input, precision")
    parser.add_argument("--sizes", default="28,64", help="image sizes of the precision section")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="dtype policies of the precision section (float32 always runs: the reference)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.precisions = ["float32", *(p for p in args.precisions.split(",") if p and p != "float32")]
    args.batch = load_config(args.config, []).train.batch_size
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    start = time.perf_counter()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.epochs} epochs x {args.repeats} repeats")
    with tempfile.TemporaryDirectory() as tmp:
        if "input" in sections:
            input_section(args, Path(tmp))
        if "precision" in sections:
            precision_section(args, Path(tmp))
    print(f"({time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
