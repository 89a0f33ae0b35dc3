"""The terminal view of a local pipeline run: one line per step start and end, one per epoch, the rest in a log file."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from longtail.file_bounds import RECORD_MAX_BYTES, read_bounded
from longtail.submission import ROWS_KEY

# Where kfp.local writes a task's outputs, their artifacts' metadata included (kfp/local/executor_input_utils.py).
EXECUTOR_OUTPUT_FILE = "executor_output.json"
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
    """The one figure that says how a finished step went, read from the metadata its output artifacts carry.

    The components write that metadata (`<artifact>.metadata.update(...)`); kfp.local keeps it in the
    task's executor_output.json. ingest: images and rejects; weights: the class-weight range; train:
    val macro-F1; evaluate: the gate; submit, skip-submission and compare: submission rows. "" when
    nothing is recognised.
    """
    try:
        metadata = output_metadata(task_dir)
    except (OSError, ValueError, AttributeError):
        return ""
    for finder in (_ingest_figure, _weights_figure, _train_figure, _evaluate_figure, _submit_figure):
        try:
            figure = finder(metadata)
        except (ValueError, KeyError, TypeError):
            figure = ""
        if figure:
            return figure
    return ""


def finished_task_dir(root: Path, task: str) -> Path | None:
    """The output folder of the `task` that finished last under the pipeline root (None if none has).

    A pipeline's tasks write <run folder>/<task>/; a sweep's loop writes
    <run folder>/for-loop-N-iteration-K/<task>/, where parallel iterations share task names. kfp.local
    writes a task's executor_output.json as it finishes, so the newest one is that task's.
    """
    if not root.is_dir():
        return None
    outputs = [path for run in root.iterdir() if run.is_dir()
               for pattern in (f"{task}/{EXECUTOR_OUTPUT_FILE}", f"*/{task}/{EXECUTOR_OUTPUT_FILE}")
               for path in run.glob(pattern)]
    return max(outputs, key=lambda p: p.stat().st_mtime).parent if outputs else None


def output_metadata(task_dir: Path) -> dict[str, dict[str, Any]]:
    """Each output artifact's metadata, by output name, from the task's executor_output.json ({} when none)."""
    path = task_dir / EXECUTOR_OUTPUT_FILE
    text = read_bounded(path, str(path), RECORD_MAX_BYTES)
    if text is None:
        return {}
    outputs = json.loads(text).get("artifacts", {})
    return {name: (output.get("artifacts") or [{}])[0].get("metadata") or {} for name, output in outputs.items()}


# Each figure reads the keys its component writes (components/<step>.py).
def _ingest_figure(metadata: dict[str, dict[str, Any]]) -> str:
    data = metadata.get("data", {})
    if "n_images" not in data:
        return ""
    classes = f" in {int(data['n_classes'])} classes" if data.get("n_classes") else ""
    return f"{int(data['n_images'])} images{classes}, {int(data['rejected'])} rejected"


def _weights_figure(metadata: dict[str, dict[str, Any]]) -> str:
    weights = metadata.get("class_weights", {})
    if "min" not in weights:
        return ""
    return f"class weights {weights['min']:.3g}-{weights['max']:.3g}"


def _train_figure(metadata: dict[str, dict[str, Any]]) -> str:
    model = metadata.get("model", {})
    epochs = int(model.get("epochs") or 0)
    if not epochs or "final_val_macro_f1" not in model:
        return ""
    return (f"val macro-F1 {model['final_val_macro_f1']:.4f} (best {model['best_val_macro_f1']:.4f}) "
            f"after {epochs} epoch{'s' if epochs != 1 else ''}")


def _evaluate_figure(metadata: dict[str, dict[str, Any]]) -> str:
    metrics = metadata.get("metrics", {})
    if "gate_passed" not in metrics:
        return ""
    gate = "open" if metrics["gate_passed"] else "closed"
    f1 = metrics.get("macro_f1")
    return (f"macro-F1 {f1:.4f}, " if isinstance(f1, int | float) else "") + f"gate {gate}"


def _submit_figure(metadata: dict[str, dict[str, Any]]) -> str:
    submission = metadata.get("submission", {})
    if ROWS_KEY not in submission:
        return ""
    return f"{int(submission[ROWS_KEY])} submission rows"


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
        # Start times by task name, oldest first: a sweep's parallel loop iterations share task names,
        # and kfp.local's lines do not say which iteration ends, so each end takes the oldest start.
        self._started: dict[str, list[float]] = {}
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
            self._started.setdefault(m.group(1), []).append(time.perf_counter())
            self._show(f"  {time.strftime('%H:%M:%S')}  {m.group(1)} started")
        elif m := TASK_END.search(line):
            task, status = m.group(1), m.group(2)
            starts = self._started.get(task) or [time.perf_counter()]
            elapsed = format_duration(time.perf_counter() - starts.pop(0))
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
