"""`longtail tune` as a use case above tracking: an Optuna study over a search file's space, one
`longtail trial` process per trial, pruning on the per-epoch val macro-F1, the winner closed out as a
sweep's best is (registered as the champion, its submission written).

Where things go, under HOME/tune/STUDY/: journal.log (the Optuna study: Optuna's journal file storage,
which P workers and several `tune` processes share without "database is locked"), data/<setting>/ (one
ingest per data setting), test/, trials/<number>/ (config.yaml, trial.log, the trial's model and
evaluation), and at the end leaderboard.md, the plots, best.yaml and submission.csv.

A trial's process dies with the `tune` that started it (PR_SET_PDEATHSIG). Run `tune` again with the
same --study and it goes on: trials left running by a `tune` that is no longer alive are marked failed
(in the study and in MLflow) and are not counted; --trials counts finished trials (complete or pruned)
over the study's whole life. The test labels are never read by the search: `--labels` only scores the
winner's submission after the study has chosen it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from longtail.atomic_file import write_text
from longtail.config import ExperimentConfig, ingest_settings, save_config
from longtail.errors import ConfigError, LongtailError
from longtail.ingest import ingest
from longtail.post_run import close_run
from longtail.prediction import predict_submission
from longtail.search_space import SearchSpace, choice_label, config_at, yaml_flow
from longtail.storage import S3Settings
from longtail.sweep_plan import SearchPlan
from longtail.sweep_run import leaderboard_from_mlflow
from longtail.tracking.names import (
    BEST_CONFIG_FILE,
    BEST_EXPERIMENT_TAG,
    BEST_MACRO_F1,
    BEST_RUN_ID_TAG,
    CHAMPION,
    LEADERBOARD_FILE,
    REGISTERED_MODEL_TAG,
    STUDY_PLOTS,
)
from longtail.tracking.registry import register_run_model, version_tags
from longtail.tracking.study import (
    create_study_run,
    end_study_run,
    record_study_result,
    reopen_study_run,
)
from longtail.trial_metrics import PRUNE_AFTER_PERCENT
from longtail.tune_trials import (
    EPOCHS_ATTR,
    HIGH_ATTR,
    LOW_ATTR,
    RUN_ATTR,
    STEP_UNIT,
    STEP_UNIT_ATTR,
    DataCache,
    TrialRunner,
    fail_orphans,
)

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "cmaes", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
DEFAULT_TRIALS = 20
JOURNAL_FILE = "journal.log"
TARGET_NAME = "val macro-F1 (balanced)"  # the objective's name on the plots
PARENT_RUN_ATTR, TRACKING_ATTR = "mlflow_parent_run_id", "mlflow_tracking_uri"  # the study's user attributes
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])")


@dataclass
class TuneOptions:
    """How to search: `longtail tune`'s flags."""

    study: str
    trials: int | None = None
    timeout: float | None = None  # seconds
    parallelism: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    prune_after: int = PRUNE_AFTER_PERCENT  # the share of each schedule (percent) from which trials are compared
    seed: int | None = None
    storage: str | None = None  # an Optuna RDB URL; default the journal file under the study's folder
    register_as: str = ""
    s3: S3Settings | None = None  # how ingest reaches s3:// data (read from the environment at the CLI)
    environ: dict[str, str] = field(default_factory=dict, repr=False)  # the trial processes' environment (secrets)


@dataclass
class TuneOutcome:
    """What a study produced: its table, the best trial and (when a test set was given) its submission."""

    study: str
    parent_run_id: str | None
    leaderboard: str
    best_number: int
    best_value: float
    best_config: Path
    trials_finished: int
    epochs_spent: int
    submission: Path | None = None
    test_macro_f1: float | None = None
    registered_version: str | None = None
    folder: Path = field(default_factory=Path)
    experiment_id: str = ""


def parse_duration(text: str) -> float:
    """'4h', '90m', '1h30m', '45s' or plain seconds -> seconds.

    Raises:
        ConfigError: anything else.
    """
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text):
        raise ConfigError(f"--timeout {text!r} must be a duration like 4h, 90m, 1h30m or 45s")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def check_options(space: SearchSpace, options: TuneOptions) -> None:
    """Refuse options that cannot work together, before any ingest or training.

    Raises:
        ConfigError: an unknown sampler or pruner, a grid sampler on a space with ranges, a count below 1.
    """
    if options.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {options.sampler!r}")
    if options.pruner not in PRUNERS:
        raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {options.pruner!r}")
    if not 1 <= options.prune_after <= 99:
        raise ConfigError(f"--prune-after is a percent of each trial's schedule, 1 to 99, got {options.prune_after}")
    if options.sampler == "grid":
        space.grid_points()  # raises on a range
    for name, value in (("--trials", options.trials), ("--parallelism", options.parallelism)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if options.timeout is not None and options.timeout <= 0:
        raise ConfigError(f"--timeout must be > 0, got {options.timeout}")
    if not re.fullmatch(r"[\w.-]{1,100}", options.study):
        raise ConfigError(f"--study {options.study!r}: letters, digits, '.', '_' and '-' only (it names a folder)")


def target_trials(space: SearchSpace, options: TuneOptions) -> int | None:
    """How many finished trials the study aims at: --trials, else the grid's size, else DEFAULT_TRIALS
    (None: only --timeout bounds the study)."""
    if options.trials is not None:
        return options.trials
    if options.sampler == "grid":
        return space.size()
    return None if options.timeout is not None else DEFAULT_TRIALS


def make_sampler(space: SearchSpace, options: TuneOptions, n_trials: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler --sampler names, seeded with --seed."""
    seed = options.seed
    if options.sampler == "grid":
        return optuna.samplers.GridSampler({d.key: d.labels() for d in space.dimensions}, seed=seed)
    if options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if options.sampler == "cmaes":
        # CMA-ES samples the ranges; choices fall back to independent random sampling.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    # TPE models the space after its random start: a quarter of the study, 4 to 10 trials.
    startup = 10 if n_trials is None else max(4, min(10, n_trials // 4))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


def make_pruner(options: TuneOptions, n_trials: int | None) -> Any:
    """The Optuna pruner --pruner names, reading the per-epoch val macro-F1."""
    if options.pruner == "none":
        return optuna.pruners.NopPruner()
    if options.pruner == "hyperband":
        # Its steps are percents of each trial's schedule (tune_trials.schedule_steps); rungs at a third of
        # --prune-after and at --prune-after (20% and 60% by default).
        return optuna.pruners.HyperbandPruner(min_resource=max(1, options.prune_after // 3), max_resource=100,
                                              reduction_factor=3)
    # The median of at least 2 finished trials (a quarter of the study, up to 5) before any pruning, each
    # trial compared from --prune-after percent of its own schedule on.
    startup = 5 if n_trials is None else max(2, min(5, n_trials // 4))
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=options.prune_after)


def pruner_words(options: TuneOptions) -> str:
    """'median pruner from 60% of each schedule', or 'no pruner'."""
    if options.pruner == "none":
        return "no pruner"
    return f"{options.pruner} pruner from {options.prune_after}% of each schedule"


class Progress:
    """A line per finished trial: its figure, the best so far and the time left (Optuna callback)."""

    def __init__(self, target: int | None, timeout: float | None, parallelism: int) -> None:
        self.target, self.timeout, self.parallelism = target, timeout, parallelism
        self.started, self.done_here = time.monotonic(), 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done_here += 1
        finished = _finished(study)
        what = _trial_words(trial)
        try:
            best = study.best_trial
            best_text = f"best {best.value:.4f} (trial {best.number})"
        except ValueError:
            best_text = "no finished trial yet"
        elapsed = time.monotonic() - self.started
        left = None
        if self.target is not None:
            left = max(self.target - len(finished), 0) * elapsed / self.done_here
        if self.timeout is not None:
            left = min(left if left is not None else self.timeout, max(self.timeout - elapsed, 0.0))
        count = f"{len(finished)}/{self.target}" if self.target else f"{len(finished)}"
        eta = f", ETA {_minutes(left)}" if left is not None else ""
        print(f"tune: trial {trial.number} {what} | {count} finished, {best_text}{eta}", flush=True)


def _trial_words(trial: optuna.trial.FrozenTrial) -> str:
    state = trial.state
    if state == optuna.trial.TrialState.COMPLETE:
        low, high = trial.user_attrs.get(LOW_ATTR), trial.user_attrs.get(HIGH_ATTR)
        span = f" ({low:.4f}-{high:.4f})" if low is not None and high is not None else ""
        return f"val macro-F1 {trial.value:.4f}{span} after {trial.user_attrs.get(EPOCHS_ATTR)} epochs"
    if state == optuna.trial.TrialState.PRUNED:
        value = _last_value(trial)
        return f"pruned after epoch {_epochs_run(trial)}" + (f" (val macro-F1 {value:.4f})" if value is not None else "")
    return f"failed: {trial.user_attrs.get('error', 'see its trial.log')}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def open_study(plan: SearchPlan, options: TuneOptions, folder: Path, n_trials: int | None) -> optuna.Study:
    """Create the study, or load it to go on (same --study).

    A study that goes on gets its sampler seeded with --seed plus the trials it has: the same seed
    would draw the first trials' points again.
    """
    if options.storage:
        storage: Any = options.storage
    else:
        backend = optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL_FILE))
        storage = optuna.storages.JournalStorage(backend)
    study = optuna.create_study(study_name=options.study, storage=storage, direction="maximize",
                                load_if_exists=True, pruner=make_pruner(options, n_trials))
    if not study.trials:
        study.set_user_attr(STEP_UNIT_ATTR, STEP_UNIT)
    elif study.user_attrs.get(STEP_UNIT_ATTR) != STEP_UNIT:
        raise ConfigError(f"study {options.study} was made by an earlier longtail whose pruner counted epochs, not "
                          "shares of each trial's schedule, so its trials cannot be compared with new ones: "
                          "give a new --study")
    seed = None if options.seed is None else options.seed + len(study.trials)
    study.sampler = make_sampler(plan.space, dataclasses.replace(options, seed=seed), n_trials)
    return study


def run_tune(plan: SearchPlan, data: str, options: TuneOptions, *, home: str | Path, tracking_uri: str | None,
             test: str | None = None, labels: str | None = None) -> TuneOutcome:
    """Search `plan`'s space on `data`; write the winner's config, plots and (with `test`) its submission.

    Raises:
        ConfigError: bad options (check_options).
        LongtailError: no trial finished.
    """
    check_options(plan.space, options)
    folder = Path(home) / "tune" / options.study
    folder.mkdir(parents=True, exist_ok=True)
    n_trials = target_trials(plan.space, options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(plan, options, folder, n_trials)
    base_point = plan.space.point_of(plan.base)
    if not study.trials and base_point is not None and options.sampler != "grid":
        # The advice the user starts from is trial 0, so the search is measured against it on this data.
        study.enqueue_trial({d.key: base_point[d.key] if d.kind != "choice" else choice_label(base_point[d.key])
                             for d in plan.space.dimensions})
        print("tune: trial 0 is the base config's own point", flush=True)
    parent = _parent_run(study, plan, options, tracking_uri, n_trials)
    orphans = fail_orphans(study, tracking_uri, parent)
    if orphans:
        print(f"tune: trials {', '.join(map(str, orphans))} were left running by a tune that is gone: marked failed")
    done = len(_finished(study))
    remaining = None if n_trials is None else max(n_trials - done, 0)
    print(f"tune: study {options.study} ({options.sampler} sampler, {pruner_words(options)}), {done} trials finished"
          + (f", {remaining} to go" if remaining is not None else "")
          + (f", for at most {_minutes(options.timeout)}" if options.timeout else "")
          + f", {options.parallelism} at a time; storage {options.storage or folder / JOURNAL_FILE}", flush=True)
    runner = TrialRunner(plan, DataCache(data, folder / "data", options.s3), folder, options.study, tracking_uri,
                         parent, options.environ)
    if remaining != 0:
        previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
        try:
            study.optimize(runner, n_trials=remaining, timeout=options.timeout, n_jobs=options.parallelism,
                           catch=(LongtailError,), callbacks=[Progress(n_trials, options.timeout, options.parallelism)],
                           gc_after_trial=False)
        except KeyboardInterrupt:
            runner.stop_all()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return close_study(study, plan, folder, tracking_uri, parent, options, test=test, labels=labels)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _parent_run(study: optuna.Study, plan: SearchPlan, options: TuneOptions, tracking_uri: str | None,
                n_trials: int | None) -> str | None:
    if not tracking_uri:
        return None
    attrs = study.user_attrs
    if attrs.get(PARENT_RUN_ATTR) and attrs.get(TRACKING_ATTR) == tracking_uri:
        reopen_study_run(tracking_uri, attrs[PARENT_RUN_ATTR])
        return str(attrs[PARENT_RUN_ATTR])
    space = {k: yaml_flow(v) for k, v in plan.space.as_dict().items()}
    run_id = create_study_run(tracking_uri, str(plan.base.get("experiment") or "longtail"), options.study, space,
                              sampler=options.sampler, pruner=options.pruner, n_trials=n_trials,
                              prune_after=None if options.pruner == "none" else options.prune_after)
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    study.set_user_attr(TRACKING_ATTR, tracking_uri)
    return run_id


def close_study(study: optuna.Study, plan: SearchPlan, folder: Path, tracking_uri: str | None, parent: str | None,
                options: TuneOptions, *, test: str | None, labels: str | None) -> TuneOutcome:
    """The study's table, plots and best config; the winner registered and its submission written."""
    try:
        best = study.best_trial
    except ValueError:
        raise LongtailError(f"no trial of study {options.study} finished: see the trials' logs under "
                            f"{folder / 'trials'}") from None
    point = {d.key: d.value_of(best.params[d.key]) if d.kind == "choice" else best.params[d.key]
             for d in plan.space.dimensions}
    best_config = config_at(plan.base, point, f"{options.study}-best")
    best_path = save_config(best_config, folder / BEST_CONFIG_FILE)
    table = study_table(study, plan.space)
    board_text = table
    if tracking_uri and parent:
        board_text = leaderboard_from_mlflow(tracking_uri, parent_run_id=parent).markdown(f"Study {options.study}")
        board_text += "\n" + table
    board = write_text(folder / LEADERBOARD_FILE, board_text)
    plots = draw_plots(study, folder)
    finished = _finished(study)
    epochs = sum(_epochs_run(t) for t in finished)
    outcome = TuneOutcome(study=options.study, parent_run_id=parent, leaderboard=table, best_number=best.number,
                          best_value=float(best.value), best_config=best_path, trials_finished=len(finished),
                          epochs_spent=epochs, folder=folder)
    run_id = best.user_attrs.get(RUN_ATTR)
    model_dir = folder / "trials" / str(best.number) / "run" / "model"
    if test:
        test_h5 = _ingest_test(test, best_config, folder / "test", options.s3)
        outcome.submission = folder / "submission.csv"
        predict_submission(model_dir, test_h5, outcome.submission, tracking_uri=tracking_uri if run_id else None,
                           tta=best_config.evaluate.tta, tta_shift=best_config.evaluate.tta_shift)
    if tracking_uri and parent:
        tags = {BEST_RUN_ID_TAG: str(run_id), BEST_EXPERIMENT_TAG: best_config.name}
        if options.register_as and run_id:
            outcome.registered_version = register_run_model(
                tracking_uri, run_id, options.register_as, alias=CHAMPION,
                tags=version_tags(best_config.name, float(best.value)))
            tags[REGISTERED_MODEL_TAG] = f"{options.register_as} v{outcome.registered_version}"
        record_study_result(tracking_uri, parent, [board, best_path, *plots],
                            {BEST_MACRO_F1: float(best.value), "trials_finished": len(finished),
                             "epochs_spent": epochs}, tags)
        if outcome.submission and labels and run_id:
            closed = close_run(tracking_uri, run_id, submission=outcome.submission, labels=labels,
                               register_as=options.register_as, registered_alias=CHAMPION if options.register_as else None)
            outcome.test_macro_f1 = closed.test_macro_f1
        outcome.experiment_id = end_study_run(tracking_uri, parent)  # last, after its files are logged
    elif outcome.submission and labels:
        from longtail.scoring import score  # only scoring without MLflow needs it here

        outcome.test_macro_f1 = score(outcome.submission, labels).macro_f1
    return outcome


def _epochs_run(trial: optuna.trial.FrozenTrial) -> int:
    return int(trial.user_attrs.get(EPOCHS_ATTR) or 0)


def _last_value(trial: optuna.trial.FrozenTrial) -> float | None:
    return trial.intermediate_values.get(trial.last_step) if trial.last_step is not None else None


def _ingest_test(test: str, config: ExperimentConfig, out: Path, s3: S3Settings | None) -> Path:
    settings = {k: v for k, v in ingest_settings(config).items()
                if k in ("image_size", "resize", "clahe", "white_balance")}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    target = out / key
    if not (target / "test.h5").is_file():
        print(f"tune: ingesting the test images {test} for the winner's submission", flush=True)
        ingest(test, target, **settings, unlabelled=True, progress=True, s3=s3)
    return target / "test.h5"


def study_table(study: optuna.Study, space: SearchSpace) -> str:
    """Every trial: its params, the epochs it ran, its state and balanced val macro-F1 with interval (Markdown)."""
    keys = space.keys()
    lines = ["## Every trial", "", "| trial | " + " | ".join(keys) + " | epochs | state | val macro-F1 | 95% interval |",
             "|" + "---:|" * (len(keys) + 5)]
    for t in sorted(study.trials, key=lambda t: t.number):
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(t.state.name, t.state.name.lower())
        value = t.value if t.state == optuna.trial.TrialState.COMPLETE else _last_value(t)
        low, high = t.user_attrs.get(LOW_ATTR), t.user_attrs.get(HIGH_ATTR)
        params = [_cell(t.params.get(k)) for k in keys]
        lines.append(f"| {t.number} | " + " | ".join(params) + f" | {_epochs_run(t)} | {state} | "
                     + ("" if value is None else f"{value:.4f}") + " | "
                     + (f"{low:.4f}-{high:.4f}" if low is not None and high is not None else "") + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def draw_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's optimisation history, parameter importances and slice plot as PNGs (those it can draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    drawn = []
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for name, draw in zip(STUDY_PLOTS, (plots.plot_optimization_history, plots.plot_param_importances,
                                        plots.plot_slice), strict=True):
        if draw is plots.plot_param_importances and len(complete) < 2:
            log.info("no %s: parameter importances need 2 finished trials", name)
            continue
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental, on every call
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = draw(study, target_name=TARGET_NAME)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            log.warning("could not draw %s: %s", name, e)
            continue
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
        path = folder / name
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        drawn.append(path)
    return drawn

