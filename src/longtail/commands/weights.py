"""`longtail weights`: per-class loss weights from a train split, as JSON."""

from __future__ import annotations

import argparse

from longtail.class_weights import BETA_RULE, SCHEMES, write_weights
from longtail.config import WeightsConfig
from longtail.output_paths import Input, Output, check_outputs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `longtail weights TRAIN_H5 OUT_JSON --scheme ... [--beta B]`."""
    parser = subparsers.add_parser(
        "weights",
        help="class weights from a train split's class counts",
        description="none: all 1.0; inverse-frequency: largest count / count (largest class 1.0); "
        "effective-number: (1 - beta) / (1 - beta^n), normalised to sum to the number of classes.",
    )
    parser.add_argument("train_h5", metavar="TRAIN_H5")
    parser.add_argument("out_json", metavar="OUT_JSON")
    parser.add_argument("--scheme", required=True, choices=SCHEMES)
    parser.add_argument("--beta", type=float, default=WeightsConfig.beta,
                        help=f"effective-number beta, {BETA_RULE} (default: weights.beta's, {WeightsConfig.beta})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the weights JSON; the library prints "class weights (min, max) = (...)"."""
    check_outputs([Output(args.out_json, "weights JSON")], [Input(args.train_h5, "train split")])
    write_weights(args.train_h5, args.out_json, args.scheme, args.beta)
    return 0
