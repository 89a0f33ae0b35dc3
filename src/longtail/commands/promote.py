"""`longtail promote MODEL VERSION`: point the registered model's `champion` alias at a version."""

from __future__ import annotations

import argparse
import os

from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.names import CHAMPION, DEFAULT_REGISTERED_MODEL
from longtail.tracking.registry import promote
from longtail.tracking.store import resolve_tracking_uri


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail promote`."""
    p = sub.add_parser("promote", help="move the 'champion' alias of a registered model to a version",
                       description="Point the alias (default: champion) of registered model MODEL at VERSION, "
                                   "e.g. a run registered with `longtail run --register-as MODEL` (alias candidate). "
                                   "Aliases replace MLflow's deprecated stages.")
    p.add_argument("model", help=f"registered model name, e.g. {DEFAULT_REGISTERED_MODEL}")
    p.add_argument("version", help="model version number")
    p.add_argument("--alias", default=CHAMPION, help=f"alias to move (default: {CHAMPION})")
    p.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI, else .longtail/mlflow.db)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Move the alias and say where it pointed before."""
    uri = resolve_tracking_uri(args.tracking_uri or os.environ.get(TRACKING_URI_ENV))
    before = promote(uri, args.model, args.version, alias=args.alias)
    was = f"was version {before}" if before else "was not set"
    print(f"{args.model}@{args.alias} -> version {args.version} ({was})")
    return 0
