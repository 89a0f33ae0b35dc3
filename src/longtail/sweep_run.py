"""A sweep as a use case above tracking: open its parent run, rank its experiments, close it with the best model."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longtail.atomic_file import write_text
from longtail.comparison import Entry, Leaderboard, differing_knobs, rank
from longtail.config import flatten
from longtail.model_dir import pick_model_dir
from longtail.prediction import predict_submission
from longtail.tracking.names import (
    CHAMPION,
    EPOCHS_KEY,
    EVAL_ACCURACY,
    EVAL_GATE_TAG,
    EVAL_MACRO_F1,
    EVAL_MACRO_F1_PLAIN,
    EVAL_WEIGHTED_F1,
    GATE_PASSED,
    LB_SCORE,
    LEADERBOARD_FILE,
    TEST_MACRO_F1,
    TRIAL_STATE_TAG,
    TRIAL_STOPPED_EPOCH_TAG,
    VAL_MACRO_F1,
)
from longtail.tracking.queries import eval_interval
from longtail.tracking.registry import register_run_model, version_tags
from longtail.tracking.sweep import (
    create_sweep_run,
    end_sweep_run,
    record_sweep_best,
    tag_registered_model,
    training_runs,
)


def start_sweep_run(tracking_uri: str, experiment: str, name: str, configs: list[dict[str, Any]], *,
                    task_run_id: str | None = None) -> str:
    """Create the MLflow parent run whose children are the sweep's experiments; returns its id.

    Args:
        configs: the experiments' configs as dicts; the keys they differ in describe the run.
        task_run_id: the run KFP's MLflow integration opened for this task (MLFLOW_RUN_ID), see
            tracking.sweep.create_sweep_run.
    """
    knobs = differing_knobs([{k: str(v) for k, v in flatten(c).items()} for c in configs])
    return create_sweep_run(tracking_uri, experiment, name, len(configs), knobs, task_run_id=task_run_id)


def _entry(run: Any) -> Entry:
    m, p = run.data.metrics, run.data.params
    end, start = run.info.end_time, run.info.start_time
    epochs = p.get(EPOCHS_KEY)
    return Entry(
        run_id=run.info.run_id, name=p.get("name") or run.info.run_name or run.info.run_id,
        params=dict(p), macro_f1=m.get(EVAL_MACRO_F1), accuracy=m.get(EVAL_ACCURACY),
        weighted_f1=m.get(EVAL_WEIGHTED_F1), epochs=int(epochs) if epochs and epochs.isdigit() else None,
        seconds=(end - start) / 1000.0 if end and start else None, lb_score=m.get(LB_SCORE),
        gate=run.data.tags.get(EVAL_GATE_TAG), macro_f1_plain=m.get(EVAL_MACRO_F1_PLAIN),
        interval=eval_interval(m),
        test_macro_f1=m.get(TEST_MACRO_F1),
        state=run.data.tags.get(TRIAL_STATE_TAG, ""),
        stopped_epoch=_int_or_none(run.data.tags.get(TRIAL_STOPPED_EPOCH_TAG)),
        last_val=m.get(VAL_MACRO_F1),
    )


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def leaderboard_from_mlflow(tracking_uri: str, *, experiment: str | None = None,
                            parent_run_id: str | None = None) -> Leaderboard:
    """Build the leaderboard from MLflow after the fact.

    Args:
        experiment: every training run of this MLflow experiment (sweep parents excluded), or
        parent_run_id: only the children of this sweep run.

    Raises:
        LongtailError: the experiment does not exist or holds no training runs.
    """
    runs = training_runs(tracking_uri, experiment=experiment, parent_run_id=parent_run_id)
    return rank([_entry(r) for r in runs])


def finish_sweep_run(tracking_uri: str, parent_run_id: str, out_dir: str | Path, *,
                     register_as: str | None = None, gates: list[bool] | None = None) -> Leaderboard:
    """Rank the sweep's children, log the leaderboard to the parent run and register the best model.

    Args:
        gates: each experiment's evaluation gate result, reported as "N of M passed".

    Returns:
        The leaderboard; `leaderboard.md` is written into out_dir and logged to the parent run.
    """
    board = leaderboard_from_mlflow(tracking_uri, parent_run_id=parent_run_id)
    recorded = [e.gate for e in board.entries if e.gate is not None]
    if recorded:  # every experiment of the sweep, including those of earlier data settings
        board.notes.append(f"{recorded.count(GATE_PASSED)} of {len(recorded)} experiments passed the evaluation gate")
    elif gates is not None:
        board.notes.append(f"{sum(map(bool, gates))} of {len(gates)} experiments passed the evaluation gate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = write_text(out / LEADERBOARD_FILE, board.markdown("Sweep leaderboard"))
    best = board.best
    effect = f"{board.largest_effect[0]} ({board.largest_effect[1]:.4f})" if board.largest_effect else None
    record_sweep_best(tracking_uri, parent_run_id, path, best_run_id=best.run_id, best_name=best.name,
                      best_macro_f1=best.macro_f1, largest_effect=effect)
    if register_as:
        version = register_run_model(tracking_uri, best.run_id, register_as, alias=CHAMPION,
                                     tags=version_tags(best.name, best.macro_f1))
        tag_registered_model(tracking_uri, parent_run_id, register_as, version)
        board.notes.append(f"best model registered as `{register_as}` version {version}, alias `{CHAMPION}`")
    end_sweep_run(tracking_uri, parent_run_id)
    return board


@dataclass
class SweepOutcome:
    """What closing a sweep produced: the leaderboard, the best run and its submission (and its rows)."""

    leaderboard: Leaderboard
    best_run_id: str
    best_model_dir: Path
    submission: Path
    rows: int


def close_sweep(tracking_uri: str, parent_run_id: str, model_dirs: list[str | Path], test_h5: str | Path,
                leaderboard_path: str | Path, submission_path: str | Path, *, register_as: str | None = None,
                gates: list[bool] | None = None, work_dir: str | Path | None = None) -> SweepOutcome:
    """The end of a sweep: rank its runs, close the parent run, register the best model, write its submission.

    Args:
        model_dirs: every experiment's model directory (the best is the one whose run ranks first).
        leaderboard_path: where the Markdown leaderboard is copied (KFP's Markdown output).
        submission_path: the best model's submission CSV on the test split.
        work_dir: where finish_sweep_run writes leaderboard.md first (default: beside leaderboard_path).
    """
    work = Path(work_dir) if work_dir else Path(leaderboard_path).parent / "compare"
    board = finish_sweep_run(tracking_uri, parent_run_id, work, register_as=register_as or None, gates=gates)
    shutil.copyfile(work / LEADERBOARD_FILE, leaderboard_path)
    best_dir = pick_model_dir(list(model_dirs), board.best.run_id)
    predicted = predict_submission(best_dir, test_h5, submission_path, tracking_uri=tracking_uri)
    return SweepOutcome(leaderboard=board, best_run_id=board.best.run_id, best_model_dir=best_dir,
                        submission=Path(submission_path), rows=predicted.n_rows)
