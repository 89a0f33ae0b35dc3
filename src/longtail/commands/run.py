"""`longtail run CONFIG`: one experiment end to end through kfp.local."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from longtail.credentials import redact
from longtail.data_folder import TEST_LABELS_FILE
from longtail.datasets import make_fashion_mnist_lt
from longtail.errors import DataError
from longtail.output_paths import Input, Output, check_outputs
from longtail.pipelines.container_runner import RUNNER_HELP, RUNNERS
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.names import GATE_REASON_TAG
from longtail.tracking.store import ui_hint

DEMO_DATA = Path(".longtail") / "data" / "fashion-mnist-lt"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail run`."""
    p = sub.add_parser("run", help="run the whole pipeline locally through kfp.local",
                       description="Run the training pipeline (ingest → weights → train → evaluate → "
                                   "submit) on this machine through kfp.local. Without --data, builds "
                                   f"Fashion-MNIST-LT under {DEMO_DATA} and uses it.")
    p.add_argument("config", help="experiment YAML, e.g. experiments/demo.yaml")
    p.add_argument("--data", help="labelled images: folder of class folders, CSV manifest or s3://bucket/prefix")
    p.add_argument("--test", help="unlabelled test images (folder, CSV or s3://); default: DATA/../test")
    p.add_argument("--labels", help="held-out test labels CSV (id,label): score the submission")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--home", default=".longtail", help="pipeline root and MLflow store (default: .longtail)")
    p.add_argument("--register-as", default="", metavar="NAME",
                   help="register the trained model under NAME with the alias 'candidate'")
    p.add_argument("-v", "--verbose", dest="full_log", action="store_true",
                   help="show kfp.local's full log here (it always goes to a file in the pipeline root)")
    p.add_argument("--runner", choices=RUNNERS, default="subprocess",
                   help=RUNNER_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the inputs, run the pipeline, print where everything went."""
    check_outputs([Output(args.home, "pipeline home", folder=True)],
                  [Input(args.config, "experiment config"), Input(args.data, "data"), Input(args.test, "test images"),
                   Input(args.labels, "test labels")])
    from longtail.pipelines.local import run_local  # imports kfp (slow): only when a run starts

    data, test, labels = args.data, args.test, args.labels
    if data is None:
        root = Path(args.home) / "data" / "fashion-mnist-lt"
        if not (root / TEST_LABELS_FILE).is_file():
            print(f"no --data given: building Fashion-MNIST-LT in {root}")
            make_fashion_mnist_lt(root, source_dir=os.environ.get("LONGTAIL_DATA"))
        data, test = str(root / "train"), test or str(root / "test")
        labels = labels or str(root / TEST_LABELS_FILE)
    if test is None:
        guess = Path(data).parent / "test"
        if data.startswith("s3://") or not guess.is_dir():
            raise DataError("--test is required unless DATA's parent folder has a test/ folder")
        test = str(guess)
    result = run_local(args.config, data, test, labels=labels, overrides=args.overrides, home=args.home,
                       tracking_uri=os.environ.get(TRACKING_URI_ENV),
                       verbose=bool(args.full_log or args.verbose), register_as=args.register_as,
                       runner=args.runner)
    print()
    print(f"pipeline finished in {result.seconds:.0f} s")
    print(f"  MLflow run:      {result.run_id}  ({redact(result.tracking_uri)})")
    if result.summary is not None and result.macro_f1 is not None:
        print(f"  val macro-F1:    {result.summary.describe_macro_f1()}")
    if result.submission is not None:
        print(f"  submission:      {result.submission}")
    else:
        print(f"  submission:      skipped (the evaluation gate closed; see the run's {GATE_REASON_TAG} tag)")
    if result.test_macro_f1 is not None:
        print(f"  test macro-F1:   {result.test_macro_f1:.4f}  (scored against {labels})")
    print(f"  model:           {result.model_dir}")
    if result.registered_version:
        print(f"  registered:      {args.register_as} version {result.registered_version} (alias candidate; "
              f"`longtail promote {args.register_as} {result.registered_version}` makes it the champion)")
    print(f"  full log:        {result.log_path}")
    print(f"  compare runs:    {ui_hint(result.tracking_uri, result.experiment_id)}")
    return 0
