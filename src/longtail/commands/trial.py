"""`longtail trial CONFIG`: one search trial (weights, train, evaluate) printing its metric lines.

What `longtail tune` runs in a process of its own per Optuna trial, and what a Katib trial Job runs in
the train image; the values a search sampled come in as `--set KEY=VALUE`.
"""

from __future__ import annotations

import argparse
import os

from longtail.config import config_from_dict, config_to_dict, load_config
from longtail.config_overrides import apply_overrides
from longtail.errors import ConfigError
from longtail.output_paths import FORCE_HELP, Input, Output, check_outputs
from longtail.storage import check_output_folder
from longtail.sweep_plan import load_search
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.store import resolve_tracking_uri, store_input
from longtail.trial_metrics import OBJECTIVE, TRIAL_RESULT_FILE
from longtail.yaml_loader import read_yaml_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail trial`."""
    p = sub.add_parser("trial", help="one search trial: train + evaluate, a metric line per epoch",
                       description="Train and evaluate CONFIG (an experiment YAML, or a search file's base) "
                                   "on ingested splits, as the pipeline's steps do, printing "
                                   f"'<time> epoch=N {OBJECTIVE}=X' after every epoch and the evaluation's "
                                   f"figure last (the lines `longtail tune` and Katib's StdOut collector read). "
                                   f"Writes OUT/model, OUT/evaluation and OUT/{TRIAL_RESULT_FILE}.")
    p.add_argument("config", help="experiment YAML, or a search file (its base and set; its search block is ignored)")
    p.add_argument("--train", required=True, dest="train_h5", help="train split (train.h5 from ingest), local or s3://")
    p.add_argument("--val", required=True, dest="val_h5", help="val split (val.h5 from ingest), local or s3://")
    p.add_argument("--out", required=True, help="trial folder to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampled value, e.g. --set train.lr.initial=0.05 (repeatable)")
    p.add_argument("--name", help="the run's name (default: the config's name)")
    p.add_argument("--parent-run-id", help="nest the MLflow run under this one (a study's parent run)")
    p.add_argument("--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE",
                   help="a tag for the MLflow run (repeatable)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config, run the trial, print its result."""
    store = None if args.no_tracking else os.environ.get(TRACKING_URI_ENV)
    check_outputs([Output(args.out, "trial folder", folder=True)],
                  [Input(args.config, "experiment config"), Input(args.train_h5, "train split"),
                   Input(args.val_h5, "val split"), store_input(store)], force=args.force)
    check_output_folder(args.out, "trial folder")
    tags = {}
    for text in args.tags:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tag {text!r} must look like key=value")
        tags[key.strip()] = value
    raw_file = read_yaml_file(args.config)
    if isinstance(raw_file, dict) and {"base", "search"} & set(raw_file):  # a search file: its base and set
        raw = apply_overrides(load_search(args.config).base, args.overrides)
    else:
        raw = apply_overrides(config_to_dict(load_config(args.config)), args.overrides)
    if args.name:
        raw["name"] = args.name
    config = config_from_dict(raw)
    from longtail.trial_run import run_trial  # imports TensorFlow: only when a trial runs

    tracking_uri = None if args.no_tracking else resolve_tracking_uri(store)
    result = run_trial(config, args.train_h5, args.val_h5, args.out, tracking_uri=tracking_uri,
                       parent_run_id=args.parent_run_id, run_tags=tags)
    span = f" ({result.low:.4f}-{result.high:.4f})" if result.low is not None else ""
    print(f"trial {config.name}: {OBJECTIVE} {result.value:.4f}{span} after {result.epochs} epochs -> {args.out}"
          + (f" (MLflow run {result.run_id})" if result.run_id else ""))
    return 0

