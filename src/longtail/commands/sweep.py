"""`longtail sweep CONFIG...`: many experiments, one ingest, one ranked comparison in MLflow."""

from __future__ import annotations

import argparse
import os

from longtail.comparison import differing_knobs
from longtail.config import config_to_dict, flatten
from longtail.credentials import redact
from longtail.errors import ConfigError
from longtail.output_paths import Input, Output, check_outputs
from longtail.pipelines.container_runner import RUNNER_HELP, RUNNERS
from longtail.sweep_plan import group_by_data, load_sweep
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.names import DEFAULT_REGISTERED_MODEL
from longtail.tracking.store import ui_hint


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail sweep`."""
    p = sub.add_parser("sweep", help="run many experiments locally and rank them by macro-F1",
                       description="Run the sweep pipeline through kfp.local: ingest once per data setting, "
                                   "train+evaluate every config, rank by macro-F1 under one MLflow parent run, "
                                   "register the best model and write its submission.")
    p.add_argument("configs", nargs="+", help="experiment YAMLs and/or sweep files (experiments/seed-log.yaml)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="cross every config with these values, e.g. train.label_smoothing.factor=0.2,0.1,0.01")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field in every config (repeatable)")
    p.add_argument("--data", required=True, help="labelled images: folder, CSV manifest or s3://bucket/prefix")
    p.add_argument("--test", required=True, help="unlabelled test images: folder, CSV or s3://")
    p.add_argument("--labels", help="held-out labels CSV: score the best model's submission")
    p.add_argument("--parallelism", type=int, default=2, help="train+evaluate branches at once (default 2)")
    p.add_argument("--register-as", default=DEFAULT_REGISTERED_MODEL, help="registered-model name for the best model")
    p.add_argument("--name", help="name of the MLflow parent run")
    p.add_argument("--home", default=".longtail", help="pipeline root and MLflow store (default: .longtail)")
    p.add_argument("--runner", choices=RUNNERS, default="subprocess",
                   help=RUNNER_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the planned experiments and stop")
    p.add_argument("-v", "--verbose", dest="full_log", action="store_true",
                   help="show kfp.local's full log here (it always goes to a file in the pipeline root)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan, run, print the leaderboard."""
    if args.parallelism < 1:
        raise ConfigError(f"--parallelism must be >= 1, got {args.parallelism}")
    check_outputs([Output(args.home, "pipeline home", folder=True)],
                  [*(Input(c, "experiment config") for c in args.configs), Input(args.data, "data"),
                   Input(args.test, "test images"), Input(args.labels, "test labels")])
    configs = load_sweep(args.configs, args.grid, args.overrides)
    groups = group_by_data(configs)
    print(f"sweep: {len(configs)} experiment(s) over {len(groups)} data setting(s)")
    flat = [{k: str(v) for k, v in flatten(config_to_dict(c)).items()} for c in configs]
    knobs = differing_knobs(flat)
    for c, f in zip(configs, flat, strict=True):
        print(f"  {c.name}: " + ", ".join(f"{k}={f[k]}" for k in knobs))
    if args.dry_run:
        return 0
    from longtail.pipelines.local import run_sweep_local  # imports kfp (slow): only when a sweep starts

    result = run_sweep_local(configs, args.data, args.test, labels=args.labels, home=args.home,
                             tracking_uri=os.environ.get(TRACKING_URI_ENV), parallelism=args.parallelism,
                             register_as=args.register_as, sweep_name=args.name,
                             verbose=bool(args.full_log or args.verbose), runner=args.runner)
    print()
    print(result.leaderboard)
    print(f"sweep finished in {result.seconds:.0f} s; MLflow parent run {result.parent_run_id} "
          f"({redact(result.tracking_uri)})")
    if result.submission:
        print(f"best model's submission: {result.submission}")
    if result.test_macro_f1 is not None:
        print(f"best model's test macro-F1: {result.test_macro_f1:.4f}")
    if args.register_as:
        print(f"best model registered as {args.register_as}, alias champion")
    print(f"full log: {result.log_path}")
    print(f"compare in the UI: {ui_hint(result.tracking_uri, result.experiment_id)}")
    return 0
