"""`longtail train`: one experiment config, train/val HDF5 splits in, a model directory out."""

from __future__ import annotations

import argparse
import os

from longtail.config import load_config
from longtail.errors import ConfigError
from longtail.model_dir import TRAINING_OUTPUTS
from longtail.output_paths import FORCE_HELP, Input, Output, check_outputs
from longtail.post_run import close_run
from longtail.storage import check_output_folder, is_s3
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.names import CANDIDATE
from longtail.tracking.runs import system_metrics_enabled
from longtail.tracking.store import resolve_tracking_uri, store_input, task_run_from_env
from longtail.training import train


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `longtail train`."""
    p = subparsers.add_parser(
        "train",
        help="train a model from an experiment config",
        description="Train CONFIG on TRAIN_H5, validating macro-F1 on VAL_H5 every epoch. Logs one MLflow "
        "run (MLFLOW_TRACKING_URI, default a SQLite store under .longtail/). A killed training resumes "
        "from its checkpoint directory when run again.",
    )
    p.add_argument("config", help="experiment YAML (experiments/*.yaml)")
    p.add_argument("--train", required=True, dest="train_h5", help="train split (train.h5 from ingest)")
    p.add_argument("--val", required=True, dest="val_h5", help="val split (val.h5 from ingest)")
    p.add_argument("--weights", dest="weights_json", help="class weights JSON from `longtail weights`")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--checkpoint-dir", help="resume state (default OUT/checkpoints); removed on success")
    p.add_argument("--fresh", action="store_true",
                   help="discard resume state left by a training of another config or data, and start afresh")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--register-as", default="", metavar="NAME",
                   help="register the model under NAME with the alias 'candidate'")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print where the model went."""
    store = None if args.no_tracking else os.environ.get(TRACKING_URI_ENV)
    check_outputs([Output(args.out, "model directory", folder=True, names=TRAINING_OUTPUTS),
                   Output(args.checkpoint_dir, "checkpoint directory", folder=True)],
                  [Input(args.config, "experiment config"), Input(args.train_h5, "train split"),
                   Input(args.val_h5, "val split"), Input(args.weights_json, "class weights"), store_input(store)],
                  force=args.force)
    config = load_config(args.config, args.overrides)
    if not is_s3(args.out):
        check_output_folder(args.out, "model directory")
    tracking_uri = None if args.no_tracking else resolve_tracking_uri(os.environ.get(TRACKING_URI_ENV))
    if args.register_as and tracking_uri is None:
        raise ConfigError("--register-as needs MLflow tracking; drop --no-tracking")
    result = train(
        config, args.train_h5, args.val_h5, args.out,
        weights_json=args.weights_json,
        tracking_uri=tracking_uri,
        checkpoint_dir=args.checkpoint_dir,
        progress=True,
        fresh=args.fresh,
        task_run_id=task_run_from_env(os.environ),
        system_metrics=system_metrics_enabled(os.environ),
    )
    print(
        f"trained {config.name}: {result.epochs_run} epochs, val macro-F1 ({config.evaluate.target_prior} target "
        f"prior) final {result.final_val_macro_f1:.4f} best {result.best_val_macro_f1:.4f}, {result.images_per_second:.0f} images/s, "
        f"{result.seconds:.0f} s -> {result.model_dir}" + (f" (MLflow run {result.run_id})" if result.run_id else "")
    )
    if args.register_as:
        closed = close_run(tracking_uri, result.run_id, register_as=args.register_as, config_name=config.name,
                           val_macro_f1=result.final_val_macro_f1)
        print(f"registered {args.register_as} version {closed.registered_version} (alias {CANDIDATE})")
    return 0
