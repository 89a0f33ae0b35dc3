"""`longtail data`: write a real long-tailed demo dataset in the layout a competition ships."""

from __future__ import annotations

import argparse
import json
import os

from longtail import datasets
from longtail.datasets import SUMMARY_FILE
from longtail.output_paths import Input, Output, check_outputs
from longtail.photos_lt import make_photos_lt
from longtail.scaled_lt import make_scaled_lt

# Above twice this many classes, the printed line names only the largest and smallest few.
SHOWN_CLASSES = 5


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `longtail data fashion-mnist-lt|digits-lt|photos-lt|scaled-lt OUT`."""
    parser = subparsers.add_parser(
        "data",
        help="write a long-tailed demo dataset (class folders, test/ and test_labels.csv)",
        description="Write OUT/train/<class>/<id>.png (long-tailed), OUT/test/<id>.png (balanced) and "
        "OUT/test_labels.csv.",
    )
    kinds = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    fashion = kinds.add_parser(
        "fashion-mnist-lt",
        help="Fashion-MNIST, 6,000 ... 60 images per class at --imbalance 100",
        description="Fashion-MNIST from $LONGTAIL_DATA, the Debian package dataset-fashion-mnist "
        "(/usr/share/datasets/fashion-mnist), or downloaded with a checksum check.",
    )
    fashion.add_argument("--imbalance", type=float, default=100.0, help="largest / smallest class (default 100)")
    digits = kinds.add_parser("digits-lt", help="scikit-learn's digits as 32x32 PNGs, 30 per class held out")
    digits.add_argument("--imbalance", type=float, default=10.0, help="largest / smallest class (default 10)")
    photos = kinds.add_parser(
        "photos-lt",
        help="a small colour-photo folder: 8 classes, 100 ... 5 images each (64x64 crops of scikit-learn's sample photos)",
        description="Random crops of 8 regions of scikit-learn's two sample photos, recoloured: a few hundred "
        "colour images, long-tailed, with 30 per class held out as the balanced test. Deterministic per --seed.",
    )
    photos.add_argument("--imbalance", type=float, default=20.0, help="largest / smallest class (default 20)")
    scaled = kinds.add_parser(
        "scaled-lt",
        help="the seed's scale: 209 classes, 108,764 JPEG/PNG images (max/min class 600) from Fashion-MNIST",
        description="Fashion-MNIST items recoloured, rescaled and composited onto varied canvases: one class "
        "per (item, colour, background pattern), long-tailed, JPEG and PNG of varied sizes. Deterministic per --seed.",
    )
    scaled.add_argument("--classes", type=int, default=209, help="number of classes (default 209, at most 420)")
    scaled.add_argument("--images", type=int, default=108764, help="labelled images in train/ (default 108764)")
    scaled.add_argument("--source-size", type=int, default=256, help="typical image side in pixels (default 256)")
    scaled.add_argument("--imbalance", type=float, default=600.0, help="largest / smallest class (default 600)")
    scaled.add_argument("--workers", type=int, default=None, help="rendering processes (default: every CPU)")
    for sub in (fashion, digits, photos, scaled):
        sub.add_argument("out", metavar="OUT", help="output folder (created; replaced if made by longtail data)")
        sub.add_argument("--seed", type=int, default=0, help="which images are kept (default 0)")
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the dataset and print its class counts."""
    source = (os.environ.get("LONGTAIL_DATA") or None) if args.dataset in ("fashion-mnist-lt", "scaled-lt") else None
    # The whole of OUT is replaced: datasets.check_output_folder refuses one holding anything longtail did not write.
    check_outputs([Output(args.out, "dataset folder", folder=True)], [Input(source, "Fashion-MNIST folder $LONGTAIL_DATA")])
    if args.dataset == "fashion-mnist-lt":
        summary = datasets.make_fashion_mnist_lt(args.out, imbalance=args.imbalance, seed=args.seed, source_dir=source)
    elif args.dataset == "scaled-lt":
        summary = make_scaled_lt(args.out, classes=args.classes, images=args.images, source_size=args.source_size,
                                 seed=args.seed, imbalance=args.imbalance, workers=args.workers, source_dir=source)
    elif args.dataset == "photos-lt":
        summary = make_photos_lt(args.out, imbalance=args.imbalance, seed=args.seed)
    else:
        summary = datasets.make_digits_lt(args.out, imbalance=args.imbalance, seed=args.seed)
    print(f"{summary['dataset']}: {summary['n_train']} training images over {len(summary['class_counts'])} "
          f"classes, {summary['n_test']} test images in {summary['out_dir']}")
    print(class_counts_line(summary["class_counts"]))
    return 0


def class_counts_line(counts: dict[str, int], shown: int = SHOWN_CLASSES) -> str:
    """Every count when there are few classes; else the largest and smallest few (the rest is in dataset.json)."""
    if len(counts) <= 2 * shown:
        return "class counts " + json.dumps(counts)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return (f"class counts, largest {shown} " + json.dumps(dict(ranked[:shown]))
            + f", smallest {shown} " + json.dumps(dict(ranked[-shown:]))
            + f" (all {len(counts)} in {SUMMARY_FILE})")
