"""`longtail evaluate MODEL_DIR VAL_H5 OUT_DIR`: macro-F1 report, plots and the submission gate."""

from __future__ import annotations

import argparse
import os

from longtail.evaluation import evaluate
from longtail.model_dir import EVALUATION_OUTPUTS, METRICS_FILE, stored_tracking_uri
from longtail.output_paths import FORCE_HELP, Input, Output, check_outputs
from longtail.scoring import TARGET_PRIORS
from longtail.storage import check_output_folder, is_s3
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.store import store_input


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail evaluate`."""
    p = sub.add_parser(
        "evaluate",
        help="macro-F1 report, plots and the submission gate of a model on a labelled split",
        description="Predict a labelled split (val.h5) through the model directory's own preprocessing.json, "
        "print sklearn's classification_report and write metrics.json, report.txt, report.md, "
        "confusion_matrix.png and per_class_f1.png into OUT_DIR; log them to the model's MLflow run.",
        epilog="Exit status is 0 whether the gate passes or fails (the gate result is printed and stored "
        "in metrics.json as 'passed'; the pipeline branches on it). It is 2 on bad input.",
    )
    p.add_argument("model_dir", help="model directory from `longtail train`")
    p.add_argument("val_h5", help="labelled HDF5 split ingested like the training data")
    p.add_argument("out_dir", help="folder for the report, metrics and plots")
    p.add_argument("--min-macro-f1", type=float, default=0.0, metavar="X",
                   help="gate: passed when macro-F1 >= X (config evaluate.min_macro_f1; default 0: always passes)")
    p.add_argument("--target-prior", choices=TARGET_PRIORS, default=None,
                   help="the test distribution macro-F1 estimates: balanced (each image weighs 1/its class's "
                   "count) or train (the split as drawn); default: the model's evaluate.target_prior")
    p.add_argument("--tta", action="store_true", help="average each image's softmax with its left-right flip")
    p.add_argument("--tta-shift", type=float, default=0.0, metavar="FRACTION",
                   help="also average the image (and its flip, with --tta) moved FRACTION of its side (0.07: 2 px at 28 px) right, left, down and "
                   "up (config evaluate.tta_shift; default 0: no shifted views)")
    p.add_argument("--weights", dest="weights_json",
                   help="class weights JSON from `longtail weights`: train counts for the long-tail plot")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI, else the one stored with the model)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and the gate result."""
    tracking_uri = args.tracking_uri or os.environ.get(TRACKING_URI_ENV) or None
    check_outputs([Output(args.out_dir, "report folder", folder=True, names=EVALUATION_OUTPUTS)],
                  [Input(args.val_h5, "val split"), Input(args.weights_json, "class weights"),
                   store_input(tracking_uri), store_input(stored_tracking_uri(args.model_dir))],
                  model_dir=args.model_dir, force=args.force)
    if not is_s3(args.out_dir):
        check_output_folder(args.out_dir, "report folder")

    r = evaluate(
        args.model_dir, args.val_h5, args.out_dir,
        min_macro_f1=args.min_macro_f1, batch_size=args.batch_size, tta=args.tta, tta_shift=args.tta_shift, weights_json=args.weights_json,
        target_prior=args.target_prior,
        tracking_uri=tracking_uri,
    )
    print(r.report_text.rstrip())
    print()
    span = f", {100 * r.interval.level:.0f}% interval {r.interval.low:.4f}-{r.interval.high:.4f}" if r.interval else ""
    print(f"macro-F1 {r.macro_f1:.4f} ({r.target_prior} target prior{span}; split as drawn {r.macro_f1_plain:.4f})   "
          f"weighted-F1 {r.weighted_f1:.4f}   accuracy {r.accuracy:.4f}   ({r.n} images)")
    for w in r.warnings:
        print(f"WARNING: {w}")
    print(f"GATE {'PASSED' if r.passed else 'FAILED'}: {r.reason}")
    print(f"report: {r.paths['report_md']}  (plots and {METRICS_FILE} beside it)")
    if r.mlflow_run_id:
        print(f"logged to MLflow run {r.mlflow_run_id}")
    return 0
