"""`longtail ingest`: raw images (folder, CSV manifest or S3 prefix) to HDF5 splits.

Only the standard library at the top: run() starts the decoders' fork server before it imports ingest
(numpy, h5py, OpenCV), so the server loads on the second core while this process loads, not after.
"""

from __future__ import annotations

import argparse
import os
import sys

from longtail import decode_server
from longtail.decode_server import POOL_MIN_FILES
from longtail.image_size import IMAGE_SIZE_MAX, IMAGE_SIZE_MIN
from longtail.output_paths import FORCE_HELP


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _image_size(text: str) -> int:
    value = int(text)
    if not IMAGE_SIZE_MIN <= value <= IMAGE_SIZE_MAX:
        raise argparse.ArgumentTypeError(f"must be between {IMAGE_SIZE_MIN} and {IMAGE_SIZE_MAX}, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `longtail ingest SOURCE OUT [options]`."""
    parser = subparsers.add_parser(
        "ingest",
        help="decode raw images into train/val (or test) HDF5 splits",
        description="SOURCE is a folder of class folders, a CSV manifest (path,label; paths relative to the "
        "CSV) or an s3://bucket/prefix of either (endpoint from S3_ENDPOINT_URL, AWS_ENDPOINT_URL or "
        "MLFLOW_S3_ENDPOINT_URL). Writes OUT/train.h5 and OUT/val.h5 (or OUT/test.h5 with --unlabelled) "
        "and OUT/ingest.json.",
    )
    parser.add_argument("source", metavar="SOURCE")
    parser.add_argument("out", metavar="OUT", help="output folder or s3:// prefix")
    parser.add_argument("--image-size", type=_image_size, default=32, help="square side in pixels, 8 to 1024 (default 32)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of each class for val (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--min-per-class", type=int, default=0, help="drop classes with fewer images")
    parser.add_argument("--max-classes", type=_positive_int, default=None, help="keep the K largest classes")
    parser.add_argument("--resize", choices=("stretch", "aspect"), default="stretch",
                        help="stretch to the square, or keep the aspect ratio and crop the centre")
    parser.add_argument("--clahe", action="store_true", help="CLAHE on the L channel (stored pixels)")
    parser.add_argument("--white-balance", action="store_true", help="gray-world white balance (stored pixels)")
    parser.add_argument("--unlabelled", action="store_true", help="a flat test folder (or CSV of paths) -> test.h5")
    parser.add_argument("--workers", type=_positive_int, default=None, help=f"decoding processes, this one included (default: all cores from {POOL_MIN_FILES:,} files on, one below)")
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ingest; the summary lines are printed by the library."""
    # Ingest never calls BLAS, but numpy's OpenBLAS starts a thread at import that spins for ~0.1 s of
    # CPU in this process and in the fork server: on 2 cores, time taken from the decoders. One
    # thread means none is started (a value of the caller's own is kept).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    decode_server.start(args.workers)
    # Only now numpy and the rest: the server loads the decoders meanwhile, on the other core.
    from longtail.ingest import ingest, output_names
    from longtail.output_paths import Input, Output, check_outputs
    from longtail.storage import S3Settings

    check_outputs([Output(args.out, "ingest output folder", folder=True, names=output_names(args.unlabelled))],
                  [Input(args.source, "source")], force=args.force)
    ingest(
        args.source,
        args.out,
        image_size=args.image_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        min_per_class=args.min_per_class,
        max_classes=args.max_classes,
        resize=args.resize,
        clahe=args.clahe,
        white_balance=args.white_balance,
        unlabelled=args.unlabelled,
        workers=args.workers,
        progress=sys.stderr.isatty(),
        s3=S3Settings.from_env(os.environ),
    )
    return 0
