"""`longtail tune SEARCH_FILE`: an Optuna study over a search file's space, on the user's own data."""

from __future__ import annotations

import argparse
import os

from longtail.credentials import redact
from longtail.errors import ConfigError
from longtail.output_paths import Input, Output, check_outputs
from longtail.storage import S3Settings
from longtail.sweep_plan import load_search
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.names import DEFAULT_REGISTERED_MODEL
from longtail.tracking.store import resolve_tracking_uri, ui_hint
from longtail.trial_metrics import PRUNE_AFTER_PERCENT

SAMPLERS = ("tpe", "cmaes", "random", "grid")  # longtail.tune's, here so `--help` does not import Optuna
PRUNERS = ("median", "hyperband", "none")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail tune`."""
    p = sub.add_parser("tune", help="search a config's knobs with Optuna, pruning on the balanced val estimate",
                       description="Sample the search: block of SEARCH_FILE (README \"Search\") with Optuna: each "
                                   "trial trains and evaluates in a process of its own (`longtail trial`), its "
                                   "per-epoch balanced val macro-F1 goes to the pruner, and every trial is a child "
                                   "run of one MLflow parent. The winner's config is written as a YAML `longtail "
                                   "run` takes, its model registered as the champion and, with --test, its "
                                   "submission written. Run it again with the same --study to go on. Test labels "
                                   "are never read by the search.")
    p.add_argument("config", help="search file (experiments/demo-search.yaml) or an experiment YAML with --grid")
    p.add_argument("--data", help="labelled images: folder, CSV manifest or s3://bucket/prefix")
    p.add_argument("--test", help="unlabelled test images: the winner's submission (folder, CSV or s3://)")
    p.add_argument("--labels", help="held-out labels CSV: score the winner's submission (after the search)")
    p.add_argument("--trials", type=int, help="finished trials the study aims at, over all its runs "
                                              "(default: the grid's size with --sampler grid, else 20)")
    p.add_argument("--timeout", metavar="DURATION", help="stop starting trials after this long, e.g. 4h, 90m")
    p.add_argument("--parallelism", type=int, default=1, help="trials at once (default 1)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler (default tpe)")
    p.add_argument("--pruner", choices=PRUNERS, default="median", help="Optuna pruner (default median)")
    p.add_argument("--prune-after", type=int, default=PRUNE_AFTER_PERCENT, metavar="PERCENT",
                   help="compare trials from this percent of each one's schedule on (default "
                        f"{PRUNE_AFTER_PERCENT}; earlier saves more epochs and risks cutting a slow starter, "
                        "docs/benchmarks.md \"Search\")")
    p.add_argument("--study", help="study name: the same name goes on where it stopped (default: the file's name)")
    p.add_argument("--seed", type=int, help="the sampler's seed")
    p.add_argument("--storage", help="an Optuna RDB URL (default: a journal file under HOME/tune/STUDY)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a choice dimension, shorthand for KEY: {choice: [V1, V2, ...]} (repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the base config (repeatable)")
    p.add_argument("--register-as", default=DEFAULT_REGISTERED_MODEL, help="registered-model name for the winner")
    p.add_argument("--home", default=".longtail", help="study folder root and MLflow store (default: .longtail)")
    p.add_argument("--emit-katib", metavar="OUT.yaml",
                   help="write the search as a Katib Experiment (kubeflow.org/v1beta1) and stop")
    p.add_argument("--dry-run", action="store_true", help="print the space and stop")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the space, search, print the winner."""
    plan = load_search(args.config, args.overrides, args.grid)
    study = args.study or plan.name
    print(f"tune: {plan.name}: {len(plan.space.dimensions)} dimension(s)")
    for d in plan.space.dimensions:
        print(f"  {d.describe()}")
    if args.emit_katib:
        from longtail.katib import write_katib_experiment  # only this flag needs it

        check_outputs([Output(args.emit_katib, "Katib Experiment")], [Input(args.config, "search file")])
        path = write_katib_experiment(plan, args.emit_katib, parallelism=args.parallelism,
                                      max_trials=args.trials or 12,
                                      algorithm="hyperband" if args.pruner == "hyperband" else "tpe", seed=args.seed,
                                      prune_after=args.prune_after)
        print(f"Katib Experiment written: {path} (kubectl apply -f {path})")
        return 0
    if args.dry_run:
        return 0
    if not args.data:
        raise ConfigError("--data is required (the labelled images the trials train and validate on)")
    if args.labels and not args.test:
        raise ConfigError("--labels scores the winner's submission: give --test as well")
    check_outputs([Output(args.home, "pipeline home", folder=True)],
                  [Input(args.config, "search file"), Input(args.data, "data"), Input(args.test, "test images"),
                   Input(args.labels, "test labels")])
    from longtail.tune import TuneOptions, parse_duration, run_tune  # imports Optuna and TensorFlow's callers

    options = TuneOptions(study=study, trials=args.trials,
                          timeout=parse_duration(args.timeout) if args.timeout else None,
                          parallelism=args.parallelism, sampler=args.sampler, pruner=args.pruner,
                          prune_after=args.prune_after, seed=args.seed,
                          storage=args.storage, register_as=args.register_as, s3=S3Settings.from_env(os.environ),
                          environ=dict(os.environ))
    tracking_uri = resolve_tracking_uri(os.environ.get(TRACKING_URI_ENV), home=args.home)
    out = run_tune(plan, args.data, options, home=args.home, tracking_uri=tracking_uri, test=args.test,
                   labels=args.labels)
    print()
    print(out.leaderboard)
    print(f"best trial {out.best_number}: val macro-F1 {out.best_value:.4f}; {out.trials_finished} trials finished, "
          f"{out.epochs_spent} epochs trained")
    print(f"best config: {out.best_config}  (longtail run {out.best_config} --data ...)")
    if out.submission:
        print(f"winner's submission: {out.submission}")
    if out.test_macro_f1 is not None:
        print(f"winner's test macro-F1: {out.test_macro_f1:.4f}")
    if out.registered_version:
        print(f"winner registered as {args.register_as} version {out.registered_version}, alias champion")
    if out.parent_run_id:
        print(f"MLflow parent run {out.parent_run_id} ({redact(tracking_uri)}); compare in the UI: {ui_hint(tracking_uri, out.experiment_id, view=out.study)}")
    return 0
