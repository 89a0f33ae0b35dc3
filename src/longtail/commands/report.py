"""`longtail report EXPERIMENT`: the leaderboard of an MLflow experiment, after the fact."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from longtail.atomic_file import write_text
from longtail.errors import LongtailError
from longtail.output_paths import Output, check_outputs
from longtail.sweep_run import leaderboard_from_mlflow
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.store import check_store, resolve_tracking_uri, store_input


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail report`."""
    p = sub.add_parser("report", help="leaderboard of an MLflow experiment (local macro-F1 next to LB scores)",
                       description="Rank every training run of an MLflow experiment by macro-F1, with the knobs "
                                   "that differ, recorded leaderboard scores (longtail lb) and their mean "
                                   "difference from local macro-F1. Prints Markdown and saves it.")
    p.add_argument("experiment", help="MLflow experiment name (config field `experiment`)")
    p.add_argument("--sweep", help="only the children of this sweep parent run id")
    p.add_argument("--out", help="Markdown file to write (default: <experiment>-report.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, print and save the report."""
    if not args.experiment.strip():  # a tracking server refuses it with an error MLflow raises as a traceback
        raise LongtailError("the experiment name is empty; pass the name of an MLflow experiment (a config's "
                            "`experiment` field), e.g. `longtail report demo`")
    uri = resolve_tracking_uri(os.environ.get(TRACKING_URI_ENV))
    out = Path(args.out or f"{args.experiment}-report.md")
    check_outputs([Output(out, "report")], [store_input(uri)])
    check_store(uri)  # a failing server is one line, not a traceback
    board = leaderboard_from_mlflow(uri, experiment=args.experiment, parent_run_id=args.sweep)
    text = board.markdown(f"{args.experiment}: {len(board.entries)} run(s)")
    write_text(out, text, what="report")
    print(text)
    print(f"saved to {out}")
    return 0
