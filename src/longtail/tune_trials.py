"""The trials of `longtail tune`: one `longtail trial` process per Optuna trial, its epoch lines fed to
the pruner; one ingest per data setting; and the trials a `tune` that died left running, found and failed.

A trial's process dies with the `tune` thread that started it (PR_SET_PDEATHSIG), so a killed `tune`
leaves no training behind; its trial stays RUNNING in the study with the owner it was tagged with
(host, pid, start time), which the next `tune` on the same study checks and marks failed.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna

from longtail.config import ExperimentConfig, ingest_settings, save_config
from longtail.errors import ConfigError, LongtailError
from longtail.ingest import ingest
from longtail.search_space import Dimension, config_at, sample, yaml_flow
from longtail.storage import S3Settings
from longtail.sweep_plan import SearchPlan
from longtail.tracking.env import TRACKING_URI_ENV
from longtail.tracking.names import STUDY_TAG, TRIAL_NUMBER_TAG
from longtail.tracking.study import record_trial_state
from longtail.trial_metrics import EPOCH, OBJECTIVE, load_trial_result, parse_metric_line

OWNER_ATTR, POINT_ATTR, LOW_ATTR, HIGH_ATTR, EPOCHS_ATTR, RUN_ATTR = (
    "owner", "point", "low", "high", "epochs", "run_id")  # an Optuna trial's user attributes
STOP_WAIT_SECONDS = 30  # a pruned trial's process gets this long to end after SIGTERM
# The pruner's steps are percents of each trial's own schedule, not epochs: with train.epochs searched,
# epoch 10 of a 16-epoch run (its learning rate nearly decayed) against epoch 10 of a 40-epoch run
# (still near its peak) ranks the schedules, not the trials. A study records this, and one whose
# steps were epochs is not gone on with (open_study).
STEP_UNIT_ATTR, STEP_UNIT = "pruning_steps", "percent of the trial's schedule"


def schedule_steps(epoch: int, epochs: int) -> range:
    """The pruner's steps (percents of a trial's schedule) that `epoch` of `epochs` reaches first: each
    percent holds the figure of the last epoch finished by then, so trials of any length share every step
    from 1 to 100 and the median at a step compares the same share of each schedule."""
    return range(100 * (epoch - 1) // epochs + 1, 100 * epoch // epochs + 1)


def suggest(trial: optuna.Trial, dim: Dimension) -> Any:
    """One dimension's value from an Optuna trial (choices by their labels, mapped back to values)."""
    if dim.kind == "choice":
        return dim.value_of(trial.suggest_categorical(dim.key, dim.labels()))
    if dim.kind == "int":
        return trial.suggest_int(dim.key, int(dim.low), int(dim.high))
    return trial.suggest_float(dim.key, float(dim.low), float(dim.high), log=dim.log)


def owner_id() -> str:
    """This process, in words another `tune` on this machine can check: host, pid and start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:  # field 22 of /proc/PID/stat: the start time in clock ticks since boot (Linux)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(owner: str) -> bool | None:
    """Whether the `tune` process `owner` names is alive; None when it ran on another machine."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return None
    if not pid_text.isdigit():
        return False
    return bool(started) and _start_time(int(pid_text)) == started


def fail_orphans(study: optuna.Study, tracking_uri: str | None, parent_run_id: str | None) -> list[int]:
    """Mark failed the trials a `tune` process that died left running (in the study and in MLflow)."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER_ATTR)
        age = time.time() - t.datetime_start.timestamp() if t.datetime_start else 0.0
        if (owner_alive(owner) is False) if owner else age > 60:
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            failed.append(t.number)
            if tracking_uri and parent_run_id:
                record_trial_state(tracking_uri, parent_run_id, t.number, "failed")
    return failed


def _die_with_parent() -> None:
    """In a trial's process before exec: SIGTERM when the thread that started it (in `tune`) dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class DataCache:
    """One ingest per data setting (the config's `data` section), shared by every trial that needs it."""

    def __init__(self, source: str, folder: Path, s3: S3Settings | None) -> None:
        self.source, self.folder, self.s3 = source, folder, s3
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def splits(self, config: ExperimentConfig) -> tuple[Path, Path]:
        settings = ingest_settings(config)
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        out = self.folder / key
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if not (out / "train.h5").is_file() or not (out / "val.h5").is_file():
                print(f"tune: ingesting {self.source} for data setting {key} ({_short(settings)})", flush=True)
                ingest(self.source, out, **settings, progress=True, s3=self.s3)
        return out / "train.h5", out / "val.h5"


def _short(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


class TrialRunner:
    """The objective: one `longtail trial` process per Optuna trial, its epoch lines fed to the pruner."""

    def __init__(self, plan: SearchPlan, data: DataCache, folder: Path, study_name: str,
                 tracking_uri: str | None, parent_run_id: str | None, environ: dict[str, str]) -> None:
        self.plan, self.data, self.folder, self.study_name = plan, data, folder, study_name
        self.tracking_uri, self.parent_run_id, self.environ = tracking_uri, parent_run_id, environ
        self.owner = owner_id()
        self._live: dict[int, subprocess.Popen] = {}
        self._live_guard = threading.Lock()

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(OWNER_ATTR, self.owner)
        point = sample(self.plan.space, lambda d: suggest(trial, d))
        trial.set_user_attr(POINT_ATTR, {k: yaml_flow(v) for k, v in point.items()})
        try:
            config = config_at(self.plan.base, point, f"{self.study_name}-t{trial.number:03d}")
        except ConfigError as e:  # a combination the config refuses (a warm-up longer than a sampled run)
            trial.set_user_attr("error", str(e))
            raise
        train_h5, val_h5 = self.data.splits(config)
        folder = self.folder / "trials" / str(trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        config_path = save_config(config, folder / "config.yaml")
        command = [sys.executable, "-m", "longtail.cli", "trial", str(config_path), "--train", str(train_h5),
                   "--val", str(val_h5), "--out", str(folder / "run"), "--force"]
        env = dict(self.environ)  # the caller's environment (S3 and MLflow credentials), as the CLI read it
        if self.tracking_uri and self.parent_run_id:
            command += ["--parent-run-id", self.parent_run_id, "--tag", f"{STUDY_TAG}={self.study_name}",
                        "--tag", f"{TRIAL_NUMBER_TAG}={trial.number}"]
            env[TRACKING_URI_ENV] = self.tracking_uri
        else:
            command.append("--no-tracking")
        return self._run(trial, command, env, folder, int(config.train.epochs))

    def _run(self, trial: optuna.Trial, command: list[str], env: dict[str, str], folder: Path, epochs: int) -> float:
        log_path = folder / "trial.log"
        last_epoch, tail = 0, []
        with open(log_path, "a", encoding="utf-8") as log_file:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                    bufsize=1, preexec_fn=_die_with_parent)
            with self._live_guard:
                self._live[trial.number] = proc
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log_file.write(line)
                    log_file.flush()  # the log is where a user watches a long trial
                    tail = (tail + [line.rstrip()])[-5:]
                    parsed = parse_metric_line(line)
                    if parsed is None or EPOCH not in parsed[1] or OBJECTIVE not in parsed[1]:
                        continue
                    epoch = int(parsed[1][EPOCH])
                    if epoch <= last_epoch:  # the evaluation's closing line repeats the last epoch
                        continue
                    last_epoch = epoch
                    trial.set_user_attr(EPOCHS_ATTR, epoch)  # the epochs run, whatever ends the trial
                    steps = schedule_steps(epoch, epochs)
                    if not steps:  # a schedule over 100 epochs: this epoch reaches no new percent
                        continue
                    for step in steps:
                        trial.report(parsed[1][OBJECTIVE], step)
                    if trial.should_prune():
                        self._stop(proc)
                        self._record("pruned", trial.number, epoch)
                        raise optuna.TrialPruned(f"pruned after epoch {epoch}")
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    self._stop(proc)
                with self._live_guard:
                    self._live.pop(trial.number, None)
        if code != 0:
            self._record("failed", trial.number)
            error = next((t for t in reversed(tail) if "error" in t.lower()), tail[-1] if tail else "")
            trial.set_user_attr("error", error[-300:])
            raise LongtailError(f"trial {trial.number} failed (exit {code}): {error}; its log: {log_path}")
        result = load_trial_result(folder / "run")
        for key, value in ((LOW_ATTR, result.low), (HIGH_ATTR, result.high), (EPOCHS_ATTR, result.epochs),
                           (RUN_ATTR, result.run_id)):
            trial.set_user_attr(key, value)
        self._record("complete", trial.number)
        return result.value

    def _record(self, state: str, number: int, epoch: int | None = None) -> None:
        if self.tracking_uri and self.parent_run_id:
            record_trial_state(self.tracking_uri, self.parent_run_id, number, state, epoch)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        """Stop every live trial process (`tune` interrupted)."""
        with self._live_guard:
            live = list(self._live.values())
        for proc in live:
            self._stop(proc)
