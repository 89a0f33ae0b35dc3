"""`longtail predict MODEL_DIR TEST_H5 SUBMISSION_CSV`: the submission CSV, through the model's own preprocessing."""

from __future__ import annotations

import argparse
import os

from longtail.model_dir import stored_tracking_uri
from longtail.output_paths import Input, Output, check_outputs
from longtail.prediction import predict, tta_text
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.store import store_input


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail predict`."""
    p = sub.add_parser(
        "predict",
        help="write the submission CSV for a split",
        description="Predict every image of an HDF5 split with exactly the preprocessing saved in MODEL_DIR "
        "(there are no preprocessing flags to get wrong) and write id,label rows sorted by id, "
        "ids without folders and extension, labels as class names.",
    )
    p.add_argument("model_dir", help="model directory from `longtail train`")
    p.add_argument("test_h5", help="HDF5 split (usually test.h5 from `longtail ingest --unlabelled`)")
    p.add_argument("submission_csv", help="where to write the CSV (atomically)")
    p.add_argument("--tta", action="store_true", help="average each image's softmax with its left-right flip")
    p.add_argument("--tta-shift", type=float, default=0.0, metavar="FRACTION",
                   help="also average the image (and its flip, with --tta) moved FRACTION of its side (0.07: 2 px at 28 px) right, left, down and "
                   "up (config evaluate.tta_shift; default 0: no shifted views)")
    p.add_argument("--id-column", default="id", help="header of the id column (default: id)")
    p.add_argument("--label-column", default="label", help="header of the label column (default: label)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI, else the one stored with the model)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict and say where the CSV went."""
    tracking_uri = args.tracking_uri or os.environ.get(TRACKING_URI_ENV) or None
    check_outputs([Output(args.submission_csv, "submission CSV")],
                  [Input(args.test_h5, "test split"), store_input(tracking_uri),
                   store_input(stored_tracking_uri(args.model_dir))], model_dir=args.model_dir)
    r = predict(
        args.model_dir, args.test_h5, args.submission_csv,
        tta=args.tta, tta_shift=args.tta_shift, id_column=args.id_column, label_column=args.label_column, batch_size=args.batch_size,
        tracking_uri=tracking_uri,
    )
    augmented = tta_text(r.tta, r.tta_shift)
    print(f"wrote {r.n_rows} rows to {r.path}{f' ({augmented})' if augmented else ''}")
    common = sorted(r.predicted_counts.items(), key=lambda kv: -kv[1])[:5]
    print("most predicted: " + ", ".join(f"{name} {count}" for name, count in common))
    if r.mlflow_run_id:
        print(f"logged to MLflow run {r.mlflow_run_id}")
    return 0
