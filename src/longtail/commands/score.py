"""`longtail score SUBMISSION_CSV LABELS_CSV`: macro-F1 of a submission against held-out labels."""

from __future__ import annotations

import argparse

from longtail.scoring import score


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `longtail score`."""
    p = sub.add_parser(
        "score",
        help="macro-F1 and the report of a submission against held-out labels",
        description="Score a submission CSV as the leaderboard does (macro-F1) against a labels CSV "
        "such as test_labels.csv. Every id must appear exactly once in both; labels are class names.",
    )
    p.add_argument("submission_csv")
    p.add_argument("labels_csv")
    p.add_argument("--id-column", default="id", help="header of the id column in both files (default: id)")
    p.add_argument("--label-column", default="label", help="header of the label column in both files (default: label)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score and print the report and macro-F1."""
    r = score(args.submission_csv, args.labels_csv, id_column=args.id_column, label_column=args.label_column)
    print(r.report_text.rstrip())
    print()
    print(f"macro-F1 {r.macro_f1:.4f}   weighted-F1 {r.weighted_f1:.4f}   accuracy {r.accuracy:.4f}   ({r.n} images)")
    return 0
