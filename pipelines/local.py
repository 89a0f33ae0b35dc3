"""`longtail run`: the training pipeline on this machine through kfp.local, with embedded defaults."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from longtail.components.images import DEFAULT_REGISTRY, DEFAULT_TAG
from longtail.config import ExperimentConfig, config_to_dict, load_config
from longtail.errors import DataError, LongtailError
from longtail.knobs import config_to_params
from longtail.model_dir import RUN_FILE, RunInfo
from longtail.pipelines.container_runner import absolute_sources, check_runner
from longtail.pipelines.local_session import local_session, print_restored
from longtail.pipelines.sweep import SweepOutputs, sweep_steps
from longtail.pipelines.training import create_pipeline
from longtail.post_run import close_run
from longtail.run_log import RunConsole, finished_task_dir, step_figure
from longtail.source_check import check_sources
from longtail.storage import S3Settings
from longtail.submission import is_skipped_submission
from longtail.sweep_plan import group_by_data
from longtail.sweep_run import start_sweep_run
from longtail.tracking.names import BEST_TEST_MACRO_F1, CHAMPION, DEFAULT_REGISTERED_MODEL
from longtail.tracking.queries import RunSummary, experiment_id_of, run_summary, tag_pipeline_run
from longtail.tracking.runs import append_description
from longtail.tracking.store import default_tracking_uri, task_run_from_env
from longtail.tracking.sweep import best_run_id

if TYPE_CHECKING:
    from kfp.dsl import Artifact

@dataclass(kw_only=True)
class LocalResult:
    """What every local pipeline run produced: where it is tracked, its submission and its log."""

    tracking_uri: str
    submission: Path | None
    test_macro_f1: float | None
    seconds: float
    experiment_id: str = ""
    log_path: Path | None = None


@dataclass(kw_only=True)
class LocalRunResult(LocalResult):
    """What a local training pipeline run produced."""

    model_dir: Path
    run_id: str
    macro_f1: float | None
    passed: bool
    registered_version: str | None = None
    summary: RunSummary | None = None


def check_source(uri: str, what: str) -> None:
    """Fail before any work when a local input is missing (S3 inputs: by their listing, source_check)."""
    if uri.startswith("s3://"):
        return
    if not Path(uri).exists():
        raise DataError(f"{what} not found: {uri} (give a folder of class folders, a CSV manifest or s3://bucket/prefix)")


def run_local(
    config_path: str | Path,
    data: str,
    test: str,
    *,
    labels: str | Path | None = None,
    overrides: list[str] | None = None,
    home: str | Path = ".longtail",
    tracking_uri: str | None = None,
    parent_run_id: str = "",
    verbose: bool = False,
    register_as: str = "",
    runner: str = "subprocess",
) -> LocalRunResult:
    """Run the training pipeline through kfp.local.SubprocessRunner in this Python environment.

    Args:
        config_path: experiment YAML; its knobs become the pipeline's arguments.
        data, test: labelled and unlabelled image sources (folder, CSV or s3:// prefix).
        labels: optional held-out labels CSV; when given the submission is scored and the
            score logged to the run as test_macro_f1.
        home: folder for the pipeline root and (by default) the MLflow SQLite store.
        tracking_uri: MLflow tracking URI; default: SQLite under `home`.
        verbose: show kfp.local's full log on the terminal (it always goes to the log file).
        register_as: register the model under this name with the alias `candidate` ("" to skip).
        runner: "subprocess" (this Python) or "container" (each step in its step image; see
            pipelines/container_runner.py).

    Returns:
        The model directory, MLflow run, validation macro-F1, gate result and submission path.
    """
    cfg = load_config(config_path, overrides)
    data, test = _sources_for(runner, data, test)
    home, tracking_uri = _check_inputs(data, test, labels, home, tracking_uri, [cfg])
    with local_session(home, tracking_uri, runner=runner, sources=[data, test]) as tracking_uri:
        pipeline = create_pipeline(cfg)
        root = home / "pipeline-root"
        before = _run_dirs(root)
        start = time.perf_counter()
        with _console(root, "longtail-training", verbose) as console:
            try:
                task = pipeline(data_uri=str(data), test_uri=str(test), parent_run_id=parent_run_id)
            except RuntimeError as e:
                raise _step_failed(console, e) from e
        seconds = time.perf_counter() - start
        model_dir = Path(task.outputs["model"].path)
        result = _summarise(model_dir, task.outputs["submission"], tracking_uri, seconds)
        result.log_path = console.log_path
        _record_run_facts(tracking_uri, _run_dirs(root) - before, "longtail-training")
        _describe_origin(tracking_uri, result.run_id, config_path, overrides)
        result.experiment_id = experiment_id_of(tracking_uri, result.run_id)
        closed = close_run(tracking_uri, result.run_id, submission=result.submission, labels=labels,
                           register_as=register_as, config_name=cfg.name, val_macro_f1=result.macro_f1)
    result.test_macro_f1, result.registered_version = closed.test_macro_f1, closed.registered_version
    return result


# --- What the terminal shows: step lines and epoch lines; kfp.local's full log goes to a file ---

def _run_dirs(root: Path) -> set[Path]:
    """kfp.local's run folders (<pipeline root>/<pipeline name>-<timestamp>)."""
    return {p for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


@contextlib.contextmanager
def _console(root: Path, pipeline_name: str, verbose: bool) -> Iterator[RunConsole]:
    """Route this process's stdout/stderr (kfp.local's logs, the steps' streamed output) through a
    RunConsole for the duration of the run; the log file lives in the pipeline root."""
    log_path = root / f"{pipeline_name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    terminal = sys.stdout
    console = RunConsole(log_path, terminal, verbose=verbose, figure=lambda task: step_figure(finished_task_dir(root, task) or root / task))
    console.say(f"{pipeline_name}: full log in {log_path}" + ("" if verbose else " (-v shows it here)"))
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)]
    streams = [h.stream for h in handlers]
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        for h in handlers:
            h.setStream(console)
        try:
            yield console
        finally:
            for h, stream in zip(handlers, streams, strict=True):
                h.setStream(stream)
            console.close()


def _step_failed(console: RunConsole, error: Exception) -> LongtailError:
    """One line: which step failed, its own last error line, and where the full log is."""
    step = console.failed_task or "a step"
    cause = console.last_error() or str(error)
    return LongtailError(f"step '{step}' failed: {cause} (full log: {console.log_path})")


def _record_run_facts(tracking_uri: str, run_dirs: set[Path], pipeline_name: str) -> None:
    """Tag every training run of these kfp.local runs with the pipeline run id and pipeline name."""
    for run_dir in run_dirs:
        for run_file in run_dir.rglob(RUN_FILE):
            info = RunInfo.load(run_file.parent)
            if info is not None:
                tag_pipeline_run(tracking_uri, info.run_id, run_dir.name, pipeline_name)


def _describe_origin(tracking_uri: str, run_id: str, config_path: str | Path, overrides: list[str] | None) -> None:
    changes = f" with {', '.join(f'`--set {o}`' for o in overrides)}" if overrides else " as written"
    append_description(tracking_uri, run_id, f"From `{config_path}`{changes}.")


def _sources_for(runner: str, data: str, test: str) -> tuple[str, str]:
    """The data/test URIs as the runner's steps will see them (containers need absolute paths)."""
    if check_runner(runner) == "container":
        data, test = absolute_sources(str(data), str(test))
    return data, test


def _check_inputs(data: str, test: str, labels: str | Path | None, home: str | Path,
                  tracking_uri: str | None, configs: list[ExperimentConfig]) -> tuple[Path, str]:
    """Check the inputs and make `home`; returns it (absolute) and the tracking URI (default: SQLite under it).

    Everything that can fail here fails before any pipeline step runs (the session checks the store):
    a single class or an unreachable bucket is one line here, not an ingest step's failure
    (docs/safety.md "Fail once"). The S3 settings are those the steps read from this same environment.
    """
    check_source(data, "training data")
    check_source(test, "test data")
    if labels is not None and not Path(labels).is_file():
        raise DataError(f"labels CSV not found: {labels}")
    check_sources(data, test, configs, S3Settings.from_env(os.environ))
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home, tracking_uri or default_tracking_uri(home)


def _summarise(model_dir: Path, submission_artifact: Artifact, tracking_uri: str, seconds: float) -> LocalRunResult:
    """The run's result from its outputs: the model folder's MLflow run, and the submission unless the gate closed."""
    info = RunInfo.load(model_dir)
    if info is None:
        raise LongtailError(f"the train step left no MLflow run in {model_dir}")
    summary = run_summary(tracking_uri, info.run_id)
    skipped = is_skipped_submission(submission_artifact.metadata)
    submission = None if skipped else Path(submission_artifact.path)
    return LocalRunResult(model_dir=model_dir, run_id=info.run_id, tracking_uri=tracking_uri,
                          macro_f1=summary.macro_f1, passed=summary.gate_passed and submission is not None,
                          submission=submission, test_macro_f1=None, seconds=seconds, summary=summary)


@dataclass(kw_only=True)
class LocalSweepResult(LocalResult):
    """What a local sweep produced."""

    parent_run_id: str
    leaderboard: str
    best_run_id: str


def run_sweep_local(
    configs: list,
    data: str,
    test: str,
    *,
    labels: str | Path | None = None,
    home: str | Path = ".longtail",
    tracking_uri: str | None = None,
    parallelism: int = 2,
    register_as: str = DEFAULT_REGISTERED_MODEL,
    sweep_name: str | None = None,
    verbose: bool = False,
    runner: str = "subprocess",
) -> LocalSweepResult:
    """Run the sweep pipeline through kfp.local: one pipeline per distinct data setting, one parent run.

    Args:
        configs: validated ExperimentConfigs (longtail.sweep_plan.load_sweep).
        parallelism: train+evaluate branches at once.
        register_as: MLflow registered-model name for the best model ("" to skip); it gets the
            alias `champion`.
        verbose: show kfp.local's full log on the terminal (it always goes to the log file).
        runner: "subprocess" or "container", as for run_local.
    """
    data, test = _sources_for(runner, data, test)
    home, tracking_uri = _check_inputs(data, test, labels, home, tracking_uri, configs)
    sweep_name = sweep_name or f"sweep-{configs[0].name}-{len(configs)}"
    with local_session(home, tracking_uri, runner=runner, sources=[data, test]) as tracking_uri:
        parent = start_sweep_run(tracking_uri, configs[0].experiment, sweep_name,
                                 [config_to_dict(c) for c in configs], task_run_id=task_run_from_env(os.environ))
        groups = group_by_data(configs)
        root = home / "pipeline-root"
        before = _run_dirs(root)
        start = time.perf_counter()
        with _console(root, "longtail-sweep", verbose) as console:
            task = _run_groups(groups, data, test, parent, parallelism, register_as, console)
        seconds = time.perf_counter() - start
        new_dirs = _run_dirs(root) - before
        _record_run_facts(tracking_uri, new_dirs, "longtail-sweep")
        board_path = Path(task.outputs["leaderboard"].path)
        submission = Path(task.outputs["submission"].path)
        best = best_run_id(tracking_uri, parent)
        tag_pipeline_run(tracking_uri, parent, ", ".join(sorted(d.name for d in new_dirs)), "longtail-sweep")
        # The sweep's close-out registered the best model as the champion: its test score becomes a tag.
        closed = close_run(tracking_uri, parent, submission=submission if submission.is_file() else None,
                           labels=labels, test_metric=BEST_TEST_MACRO_F1, register_as=register_as,
                           registered_alias=CHAMPION)
        return LocalSweepResult(parent_run_id=parent, tracking_uri=tracking_uri, leaderboard=board_path.read_text(),
                                best_run_id=best, submission=submission if submission.is_file() else None,
                                test_macro_f1=closed.test_macro_f1, seconds=seconds,
                                experiment_id=experiment_id_of(tracking_uri, parent), log_path=console.log_path)


def local_sweep_pipeline(configs: list, parallelism: int):
    """The sweep pipeline for kfp.local: the same steps, under a parent run opened before it starts.

    kfp.local (2.17) replaces every task output that enters a ParallelFor with the loop item, so
    start_sweep's run id cannot reach the loop here; `longtail sweep` opens the parent run itself
    (one for every data setting) and passes its id as the `parent_run_id` parameter. The compiled
    sweep (pipelines/sweep.py) opens it in its start_sweep step.
    """
    from kfp import dsl

    defaults = [config_to_params(c) for c in configs]

    def sweep_pipeline(data_uri, test_uri, parent_run_id, register_as, configs=defaults):
        ranked = sweep_steps(data_uri, test_uri, configs, parent_run_id, register_as, parallelism=parallelism,
                             registry=DEFAULT_REGISTRY, tag=DEFAULT_TAG)
        return SweepOutputs(leaderboard=ranked.outputs["leaderboard"], submission=ranked.outputs["submission"])

    # KFP reads the signature's real types; this module's annotations are strings (__future__).
    sweep_pipeline.__annotations__ = {"data_uri": str, "test_uri": str, "parent_run_id": str, "register_as": str,
                                      "configs": list, "return": SweepOutputs}
    return dsl.pipeline(name="longtail-sweep")(sweep_pipeline)


def _run_groups(groups: list, data: str, test: str, parent: str, parallelism: int, register_as: str,
                console: RunConsole):
    """One sweep pipeline per data setting, all under the same parent run; returns the last task."""
    task = None
    for i, group in enumerate(groups):
        if len(groups) > 1:
            console.say(f"sweep: data setting {i + 1} of {len(groups)} ({len(group)} experiment(s))")
        pipeline = local_sweep_pipeline(group, parallelism)
        last = i == len(groups) - 1
        try:
            with print_restored():
                task = pipeline(data_uri=str(data), test_uri=str(test), parent_run_id=parent,
                                register_as=register_as if last else "")
        except RuntimeError as e:
            raise _step_failed(console, e) from e
    return task
