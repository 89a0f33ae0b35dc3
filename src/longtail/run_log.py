"""The terminal view of a local pipeline run: one line per step start and end, one per epoch, the rest in a log file."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from longtail.model_dir import HISTORY_FILE, METRICS_FILE
from longtail.tracking.names import VAL_MACRO_F1

LOG_FILE = "run.log"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp.local's own log lines (kfp/local/task_dispatcher.py), ANSI colour codes removed.
TASK_START = re.compile(r"Executing task '([^']+)'")
TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
# The line the training's progress callback prints (format_epoch_line), wherever it is indented.
EPOCH_LINE = re.compile(r"^\s*(\S+ epoch \d+/\d+: loss .*)$")
# The last line of a Python traceback, or a longtail CLI error.
ERROR_LINE = re.compile(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Exception)\b.*|longtail \w+: error: .*)$")


def format_duration(seconds: float) -> str:
    """`42 s`, `3m 05s`, `1h 02m`."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def format_epoch_line(name: str, epoch: int, epochs: int, loss: float, val_macro_f1: float | None,
                      seconds_per_epoch: float, eta_seconds: float) -> str:
    """One epoch as the terminal shows it: `demo epoch 3/14: loss 0.8123, val macro-F1 0.7012, 41.2 s/epoch, ETA 7m 33s`."""
    f1 = "n/a" if val_macro_f1 is None else f"{val_macro_f1:.4f}"
    return (f"{name} epoch {epoch}/{epochs}: loss {loss:.4f}, val macro-F1 {f1}, "
            f"{seconds_per_epoch:.1f} s/epoch, ETA {format_duration(eta_seconds)}")


def step_figure(task_dir: Path) -> str:
    """The one figure that says how a finished step went, read from the files it wrote.

    ingest: images and rejects; weights: the class-weight range; train: val macro-F1; evaluate: the
    gate; submit: submission rows; compare: the best experiment. "" when nothing is recognised.
    """
    if not task_dir.is_dir():
        return ""
    for finder in (_ingest_figure, _weights_figure, _train_figure, _evaluate_figure, _submit_figure,
                   _compare_figure):
        try:
            figure = finder(task_dir)
        except (OSError, ValueError, KeyError, TypeError):
            figure = ""
        if figure:
            return figure
    return ""


def _output_json(task_dir: Path, name: str) -> Any:
    """The JSON file `name` inside one of the task's output folders, parsed; None when there is none."""
    path = next(task_dir.glob(f"*/{name}"), None)
    return None if path is None else json.loads(path.read_text())


def _ingest_figure(task_dir: Path) -> str:
    from longtail.ingest import INGEST_FILE

    info = _output_json(task_dir, INGEST_FILE)
    if info is None:
        return ""
    classes = f" in {info['n_classes']} classes" if info.get("n_classes") else ""
    rejected = info.get("rejected_total", len(info.get("rejected", [])))  # before rejected_total: the whole list
    return f"{info['n_images']} images{classes}, {rejected} rejected"


def _weights_figure(task_dir: Path) -> str:
    for path in task_dir.iterdir():
        if path.is_file() and path.name != "executor_output.json":
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("weights"), list) and data["weights"]:
                w = data["weights"]
                return f"class weights {min(w):.3g}-{max(w):.3g}"
    return ""


def _train_figure(task_dir: Path) -> str:
    history = _output_json(task_dir, HISTORY_FILE)
    if history is None:
        return ""
    f1 = history.get(VAL_MACRO_F1) or []
    if not f1:
        return ""
    return f"val macro-F1 {f1[-1]:.4f} (best {max(f1):.4f}) after {len(f1)} epoch{'s' if len(f1) != 1 else ''}"


def _evaluate_figure(task_dir: Path) -> str:
    data = _output_json(task_dir, METRICS_FILE)
    if data is None or "passed" not in data:
        return ""
    gate = "open" if data["passed"] else "closed"
    f1 = data.get("macro_f1")
    return (f"macro-F1 {f1:.4f}, " if isinstance(f1, int | float) else "") + f"gate {gate}"


def _submit_figure(task_dir: Path) -> str:
    path = task_dir / "submission"
    if not path.is_file():
        return ""
    with path.open(newline="") as f:
        rows = sum(1 for _ in csv.reader(f)) - 1
    return f"{rows} submission rows"


def _compare_figure(task_dir: Path) -> str:
    board = task_dir / "leaderboard"
    if not board.is_file():
        return ""
    for line in board.read_text().splitlines():
        if line.startswith("| 1 |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            return f"best: {cells[1]}"
    return ""


class RunConsole(io.TextIOBase):
    """Stands in for sys.stdout during a kfp.local run.

    Every line goes, without colour codes, to the log file. The terminal gets one line when a
    step starts, one when it ends (elapsed time and its key figure), the training's epoch lines,
    and, with `verbose`, everything. Safe for kfp.local's parallel loop tasks (one lock).
    """

    def __init__(self, log_path: Path, terminal: TextIO, *, verbose: bool = False,
                 figure: Callable[[str], str] = lambda task: "") -> None:
        super().__init__()
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", encoding="utf-8")
        self._terminal = terminal
        self._verbose = verbose
        self._figure = figure
        self._partial = ""
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._error_line: str | None = None
        self.failed_task: str | None = None
        self._failed_error: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            if self._verbose:
                self._terminal.write(text)
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if not self._log.closed:
                self._log.flush()
            self._terminal.flush()

    def close(self) -> None:
        with self._lock:
            if self._partial:
                self._line(ANSI.sub("", self._partial))
                self._partial = ""
            self._log.close()
        super().close()

    def say(self, text: str) -> None:
        """A line of longtail's own: to the terminal (unless verbose already shows the log) and the log."""
        with self._lock:
            self._log.write(text + "\n")
            self._terminal.write(text + "\n")
            self._terminal.flush()

    def _show(self, text: str) -> None:
        if not self._verbose:
            self._terminal.write(text + "\n")
            self._terminal.flush()

    def _line(self, line: str) -> None:
        self._log.write(line + "\n")
        if m := TASK_START.search(line):
            self._started[m.group(1)] = time.perf_counter()
            self._show(f"  {time.strftime('%H:%M:%S')}  {m.group(1)} started")
        elif m := TASK_END.search(line):
            task, status = m.group(1), m.group(2)
            elapsed = format_duration(time.perf_counter() - self._started.pop(task, time.perf_counter()))
            if status == "SUCCESS":
                figure = self._figure(task)
                self._show(f"  {time.strftime('%H:%M:%S')}  {task} done in {elapsed}" + (f": {figure}" if figure else ""))
            else:
                # The first failure is the cause: kfp.local may run further tasks (and print hundreds of
                # lines) before the pipeline stops, and a later failure may follow from this one.
                if self.failed_task is None:
                    self.failed_task, self._failed_error = task, self._error_line
                self._show(f"  {time.strftime('%H:%M:%S')}  {task} FAILED after {elapsed}")
        elif m := EPOCH_LINE.match(line):
            self._show(f"      {m.group(1)}")
        elif m := ERROR_LINE.match(line):
            self._error_line = m.group(1).strip()

    def last_error(self) -> str | None:
        """The error line the first failing step printed last (a traceback's final line or a longtail
        error), else the last one any step printed, if any."""
        return self._failed_error or self._error_line
