"""`longtail lb RUN_ID SCORE`: record a leaderboard score on an MLflow run, next to its local macro-F1."""

from __future__ import annotations

import argparse
import os

from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.model_runs import record_lb
from longtail.tracking.names import EVAL_MACRO_F1, LB_MINUS_LOCAL, LB_SCORE
from longtail.tracking.store import resolve_tracking_uri


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail lb`."""
    p = sub.add_parser(
        "lb",
        help="record a leaderboard score on an MLflow run",
        description=f"Log SCORE as {LB_SCORE} on the run, and {LB_MINUS_LOCAL} = SCORE - {EVAL_MACRO_F1} when the "
        "run has been evaluated, so local macro-F1 and the leaderboard can be compared across runs.",
    )
    p.add_argument("run_id", help="MLflow run id (mlflow_run.json in the model directory)")
    p.add_argument("score", type=float, help="leaderboard macro-F1, e.g. 0.702")
    p.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI, else .longtail/mlflow.db)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Record and print the comparison."""
    uri = resolve_tracking_uri(args.tracking_uri or os.environ.get(TRACKING_URI_ENV))
    r = record_lb(args.run_id, args.score, uri)
    print(f"run {args.run_id}: {LB_SCORE} {args.score:.4f}")
    if r[LB_MINUS_LOCAL] is None:
        print(f"no {EVAL_MACRO_F1} on this run yet: run `longtail evaluate` to compare")
    else:
        print(f"local {EVAL_MACRO_F1} {r[EVAL_MACRO_F1]:.4f}, LB - local = {r[LB_MINUS_LOCAL]:+.4f}")
    return 0
