"""The `longtail` command line: one subcommand per pipeline step, each a thin call into the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from longtail import __version__
from longtail.credentials import redact, redact_log_records
from longtail.disk_full import failed_path, is_disk_full, no_space_error
from longtail.errors import LongtailError
from longtail.tracking.env import credentials_to_env, tracking_env_edge

# Each module in longtail.commands has add_parser(subparsers) and run(args) -> int.
# Command modules import TensorFlow, MLflow and kfp (and the pipelines, which import kfp) only inside
# run(), so `longtail --help` stays fast.
COMMANDS = [
    "data", "ingest", "weights", "train", "evaluate", "predict", "score", "lb",
    "run", "sweep", "tune", "trial", "report", "promote",
]


TOP_LEVEL_FLAGS = ("-v", "--verbose")  # options before COMMAND that take no value


def named_command(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` names, or None (none, or an unknown one, or help/version asked first)."""
    rest = [a for a in argv if a not in TOP_LEVEL_FLAGS]
    return rest[0] if rest and rest[0] in COMMANDS else None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: with every subcommand, or only the one `argv` names.

    Only the named command's module is imported then: `longtail ingest` does not pay for the
    imports of evaluate, report or the pipelines (a quarter of a second of its start-up).
    """
    chosen = named_command(argv) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="longtail",
        description="Long-tailed image classification experiments: ingest, train, evaluate, submit.",
    )
    parser.add_argument("--version", action="version", version=f"longtail {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [chosen] if chosen else COMMANDS:
        importlib.import_module(f"longtail.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `longtail` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Every MLflow call of this command gets one bounded timeout and retry budget (unless set), and
    # the tracking URI's user name and password move to MLflow's credential variables, so no later
    # line, file or task (or MLflow's own "View run at") can print them; components do the same.
    tracking_env_edge(os.environ)
    if getattr(args, "tracking_uri", None):
        args.tracking_uri = credentials_to_env(args.tracking_uri, os.environ)
    redact_log_records()
    try:
        return int(args.func(args) or 0)
    except LongtailError as e:
        print(f"longtail {args.command}: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        # The last net under "bad input is one line": a path that cannot be used (a file where a
        # folder belongs, /proc, no permission, a full disk) in code that does not check it itself.
        if args.verbose:
            return _print_traceback()
        if is_disk_full(e):
            path = failed_path(e)
            said = no_space_error(path) if path else f"no space left on the disk ({e.strerror or e}); free some space"
            print(redact(f"longtail {args.command}: error: {said}"), file=sys.stderr)
            return 2
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(redact(f"longtail {args.command}: error: cannot use{where}: {e.strerror or e}; check the path "
                     "(a folder where a file belongs, or the reverse?) and its permissions"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"longtail {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug's traceback is shown as Python would, credentials hidden
        return _print_traceback()


def _print_traceback() -> int:
    """Print the exception being handled as Python would, with every URI's credentials hidden; returns 1."""
    print(redact(traceback.format_exc()), end="", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
