"""A sweep in MLflow: the parent run its experiments nest under, the leaderboard read back from it, and closing it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longtail.atomic_file import write_text
from longtail.errors import LongtailError
from longtail.tracking.names import (
    BEST_EXPERIMENT_TAG,
    BEST_MACRO_F1,
    BEST_RUN_ID_TAG,
    CHAMPION,
    DESCRIPTION_TAG,
    EPOCHS_KEY,
    EVAL_ACCURACY,
    EVAL_GATE_TAG,
    EVAL_MACRO_F1,
    EVAL_MACRO_F1_PLAIN,
    EVAL_WEIGHTED_F1,
    GATE_PASSED,
    KFP_TASK_RUN_TAG,
    LARGEST_EFFECT_TAG,
    LB_SCORE,
    LEADERBOARD_FILE,
    N_EXPERIMENTS_PARAM,
    PARENT_RUN_TAG,
    REGISTERED_MODEL_TAG,
    SWEEP_KNOBS_TAG,
    SWEEP_PARENT,
    SWEEP_TAG,
    TEST_MACRO_F1,
)
from longtail.tracking.queries import eval_interval


def _entry(run: Any) -> Any:
    from longtail.comparison import Entry

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
    )


def leaderboard_from_mlflow(tracking_uri: str, *, experiment: str | None = None,
                            parent_run_id: str | None = None) -> Any:
    """Build the leaderboard (longtail.comparison.Leaderboard) from MLflow after the fact.

    Args:
        experiment: every training run of this MLflow experiment (sweep parents excluded), or
        parent_run_id: only the children of this sweep run.

    Raises:
        LongtailError: the experiment does not exist or holds no training runs.
    """
    import mlflow

    from longtail.comparison import rank

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if parent_run_id:
        parent = client.get_run(parent_run_id)
        exp_ids = [parent.info.experiment_id]
        query = f"tags.{PARENT_RUN_TAG} = '{parent_run_id}'"
    else:
        exp = client.get_experiment_by_name(experiment or "")
        if exp is None:
            raise LongtailError(f"MLflow experiment {experiment!r} not found at {tracking_uri}")
        exp_ids, query = [exp.experiment_id], ""
    runs = client.search_runs(exp_ids, filter_string=query, max_results=5000)
    runs = [r for r in runs if r.data.tags.get(SWEEP_TAG) != SWEEP_PARENT]
    if not runs:
        raise LongtailError(f"no training runs found ({'sweep ' + parent_run_id if parent_run_id else experiment})")
    return rank([_entry(r) for r in runs])


def start_sweep_run(tracking_uri: str, experiment: str, name: str, configs: list[dict[str, Any]], *,
                    task_run_id: str | None = None) -> str:
    """Create the MLflow parent run whose children are the sweep's experiments; returns its id.

    Args:
        task_run_id: the run KFP's MLflow integration opened for this task (MLFLOW_RUN_ID); the
            sweep's run nests under it, in its experiment, when this store holds it.
    """
    import mlflow

    from longtail.comparison import differing_knobs
    from longtail.config import flatten
    from longtail.tracking.runs import nesting_parent
    from longtail.tracking.store import ensure_experiment, git_commit, source_tags

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp_id = ensure_experiment(experiment, tracking_uri)
    knobs = differing_knobs([{k: str(v) for k, v in flatten(c).items()} for c in configs])
    tags = {SWEEP_TAG: SWEEP_PARENT, **source_tags("longtail sweep", git_commit()),
            DESCRIPTION_TAG: (f"**Sweep {name}**: {len(configs)} experiments of `{experiment}` that differ in "
                              f"{', '.join(knobs) or 'nothing'}; its child runs are the experiments, ranked "
                              f"by {EVAL_MACRO_F1} in {LEADERBOARD_FILE}.")}
    if task_run_id:
        tags[KFP_TASK_RUN_TAG] = task_run_id
        task_run = nesting_parent(client, tracking_uri, None, task_run_id)
        if task_run is not None:
            exp_id = task_run.info.experiment_id
            tags[PARENT_RUN_TAG] = task_run_id
    run = client.create_run(exp_id, run_name=name, tags=tags)
    client.log_param(run.info.run_id, N_EXPERIMENTS_PARAM, len(configs))
    client.set_tag(run.info.run_id, SWEEP_KNOBS_TAG, ", ".join(knobs) or "(none)")
    return run.info.run_id


def finish_sweep_run(tracking_uri: str, parent_run_id: str, out_dir: str | Path, *,
                     register_as: str | None = None, gates: list[bool] | None = None) -> Any:
    """Rank the sweep's children, log the leaderboard to the parent run and register the best model.

    Args:
        gates: each experiment's evaluation gate result, reported as "N of M passed".

    Returns:
        The leaderboard; `leaderboard.md` is written into out_dir and logged to the parent run.
    """
    import mlflow

    from longtail.tracking.registry import register_run_model, version_tags

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
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
    client.log_artifact(parent_run_id, str(path))
    client.log_metric(parent_run_id, BEST_MACRO_F1, best.macro_f1 or 0.0)
    client.set_tag(parent_run_id, BEST_RUN_ID_TAG, best.run_id)
    client.set_tag(parent_run_id, BEST_EXPERIMENT_TAG, best.name)
    if board.largest_effect:
        client.set_tag(parent_run_id, LARGEST_EFFECT_TAG, f"{board.largest_effect[0]} ({board.largest_effect[1]:.4f})")
    if register_as:
        version = register_run_model(tracking_uri, best.run_id, register_as, alias=CHAMPION,
                                     tags=version_tags(best.name, best.macro_f1))
        client.set_tag(parent_run_id, REGISTERED_MODEL_TAG, f"{register_as} v{version}")
        board.notes.append(f"best model registered as `{register_as}` version {version}, alias `{CHAMPION}`")
    client.set_terminated(parent_run_id)
    return board


def best_run_id(tracking_uri: str, parent_run_id: str) -> str:
    """The run finish_sweep_run named best on a sweep's parent run ("" before it has run)."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(parent_run_id).data.tags.get(BEST_RUN_ID_TAG, "")


@dataclass
class SweepOutcome:
    """What closing a sweep produced: the leaderboard, the best run and its submission."""

    leaderboard: Any
    best_run_id: str
    best_model_dir: Path
    submission: Path


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
    from longtail.prediction import predict_submission
    from longtail.tracking.model_runs import pick_model_dir

    work = Path(work_dir) if work_dir else Path(leaderboard_path).parent / "compare"
    board = finish_sweep_run(tracking_uri, parent_run_id, work, register_as=register_as or None, gates=gates)
    shutil.copyfile(work / LEADERBOARD_FILE, leaderboard_path)
    best_dir = pick_model_dir(list(model_dirs), board.best.run_id)
    predict_submission(best_dir, test_h5, submission_path, tracking_uri=tracking_uri)
    return SweepOutcome(leaderboard=board, best_run_id=board.best.run_id, best_model_dir=best_dir,
                        submission=Path(submission_path))
