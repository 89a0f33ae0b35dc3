r"""The metric lines of a search trial, and its result file: what `tune` and Katib read from a trial.

A line is

    2026-12-07T14:03:11.042Z epoch=3 val_macro_f1=0.8731

an RFC 3339 timestamp first (Katib's StdOut collector takes it as the value's time; medianstop compares
trials by it), then `name=value` pairs in the collector's default format `([\w|-]+)\s*=\s*(number)`.
The per-epoch figure is the val macro-F1 under evaluate.target_prior (balanced by default) that the
training selects its best epoch on; the last line is the evaluation's, with its interval.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from longtail.atomic_file import write_text
from longtail.errors import LongtailError
from longtail.file_bounds import RECORD_MAX_BYTES, read_bounded
from longtail.tracking.names import VAL_MACRO_F1

OBJECTIVE = VAL_MACRO_F1  # the metric both engines maximise
OBJECTIVE_LOW, OBJECTIVE_HIGH = f"{VAL_MACRO_F1}_low", f"{VAL_MACRO_F1}_high"
EPOCH = "epoch"
# Both engines' median pruners compare a trial with the others only from this share of its schedule on:
# on the demo split's study, the complete trials' figures before 60% ranked them unlike their ends (the
# eventual best was below the others' median from 20% to 50%; docs/benchmarks.md "Search").
PRUNE_AFTER_PERCENT = 60
TRIAL_RESULT_FILE = "trial.json"
MODEL_FOLDER, EVALUATION_FOLDER, WEIGHTS_FILE = "model", "evaluation", "weights.json"
_PAIR = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def metric_line(values: dict[str, float | int], when: float | None = None) -> str:
    """`<RFC 3339 UTC time> name=value ...`: one line Katib's StdOut collector and `tune` both parse."""
    now = time.time() if when is None else when
    # Milliseconds: Katib orders a trial's values by time, so the evaluation's line must not tie the last epoch's.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    pairs = " ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.6f}" for k, v in values.items())
    return f"{stamp} {pairs}"


def parse_metric_line(line: str) -> tuple[str, dict[str, float]] | None:
    """(timestamp, {name: value}) of a metric line; None for any other line (progress, logs)."""
    head, _, rest = line.strip().partition(" ")
    if not _TIMESTAMP.match(head):
        return None
    values = {m.group(1): float(m.group(2)) for m in _PAIR.finditer(rest) if m.group(2) not in ("", "+", "-")}
    return (head, values) if values else None


@dataclass
class TrialResult:
    """What one trial produced: the objective with its interval, the epochs run, and where things went."""

    value: float
    low: float | None
    high: float | None
    epochs: int
    run_id: str | None
    model_dir: str
    passed: bool

    def save(self, out_dir: str | Path) -> Path:
        return write_text(Path(out_dir) / TRIAL_RESULT_FILE, json.dumps(asdict(self), indent=2))


def load_trial_result(out_dir: str | Path) -> TrialResult:
    """The trial.json a finished trial wrote.

    Raises:
        LongtailError: missing or not a trial result (the trial did not finish).
    """
    path = Path(out_dir) / TRIAL_RESULT_FILE
    data = read_bounded(path, f"trial result {path}", RECORD_MAX_BYTES)
    if data is None:
        raise LongtailError(f"{path} is missing: the trial did not finish")
    try:
        return TrialResult(**json.loads(data.decode("utf-8")))
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise LongtailError(f"{path} is not a trial result: {e}") from None


