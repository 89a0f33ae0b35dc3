"""The leaderboard of a sweep: experiments ranked by macro-F1, with the knobs that differ between them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longtail.errors import LongtailError

# Params every run differs in by construction: never a "knob".
NOT_KNOBS = {"name", "train.seed_run", "dataset.fingerprint"}
SWEEP_TAG = "longtail.sweep"


@dataclass
class Entry:
    """One experiment of a sweep, as MLflow recorded it."""

    run_id: str
    name: str
    params: dict[str, str]
    macro_f1: float | None
    accuracy: float | None
    weighted_f1: float | None
    epochs: int | None
    seconds: float | None
    lb_score: float | None = None
    gate: str | None = None


@dataclass
class Leaderboard:
    """Entries best first, the knobs that differ, and the knob whose values move macro-F1 most."""

    entries: list[Entry]
    knobs: list[str]
    largest_effect: tuple[str, float] | None
    lb_mean_difference: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Entry:
        """The top entry (highest macro-F1)."""
        return self.entries[0]

    def markdown(self, title: str = "Leaderboard") -> str:
        """The table the seed log kept by hand, as Markdown (KFP's Markdown artifact, report files)."""
        has_lb = any(e.lb_score is not None for e in self.entries)
        head = ["#", "experiment", *self.knobs, "macro-F1", "accuracy", "weighted-F1", "epochs", "wall time"]
        if has_lb:
            head += ["LB", "LB − local"]
        lines = [f"# {title}", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join("---:" if i == 0 or i > 1 + len(self.knobs) else "---" for i in range(len(head))) + "|"]
        for rank, e in enumerate(self.entries, 1):
            row = [str(rank), e.name, *(e.params.get(k, "") for k in self.knobs), _f(e.macro_f1), _f(e.accuracy),
                   _f(e.weighted_f1), "" if e.epochs is None else str(e.epochs),
                   "" if e.seconds is None else f"{e.seconds:.0f} s"]
            if has_lb:
                diff = None if e.lb_score is None or e.macro_f1 is None else e.lb_score - e.macro_f1
                row += [_f(e.lb_score), _f(diff, signed=True)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if self.largest_effect:
            knob, spread = self.largest_effect
            lines.append(f"**Largest effect:** `{knob}` moves mean macro-F1 by {spread:.4f} across its values.")
        if self.lb_mean_difference is not None:
            lines.append(f"**LB − local macro-F1:** {self.lb_mean_difference:+.4f} on average.")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _f(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def is_config_key(key: str) -> bool:
    """A dotted key of the experiment config (a knob), not a fact a run logged (data.classes, weights.max)."""
    from longtail.config import config_from_dict, config_to_dict, flatten

    return key.startswith("model.args.") or key in flatten(config_to_dict(config_from_dict({})))


def differing_knobs(params: list[dict[str, str]]) -> list[str]:
    """Dotted config keys whose value is not the same in every experiment (sorted)."""
    keys = sorted(k for k in {k for p in params for k in p} - NOT_KNOBS if is_config_key(k))
    return [k for k in keys if len({p.get(k) for p in params}) > 1]


def largest_effect(entries: list[Entry], knobs: list[str]) -> tuple[str, float] | None:
    """The knob whose per-value mean macro-F1 spans the widest range (max mean − min mean).

    Knobs that always change together (a step schedule's boundaries, values and name) split the
    experiments the same way and are named together, "a + b + c".
    """
    scored = [e for e in entries if e.macro_f1 is not None]
    by_partition: dict[frozenset, list[str]] = {}
    for knob in knobs:
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(scored):
            groups.setdefault(e.params.get(knob, ""), []).append(i)
        if len(groups) >= 2:
            by_partition.setdefault(frozenset(frozenset(g) for g in groups.values()), []).append(knob)
    best: tuple[str, float] | None = None
    for partition, names in by_partition.items():
        means = [sum(scored[i].macro_f1 for i in g) / len(g) for g in partition]
        spread = max(means) - min(means)
        if best is None or spread > best[1]:
            best = (" + ".join(sorted(names)), spread)
    return best


def rank(entries: list[Entry]) -> Leaderboard:
    """Sort by macro-F1 (missing last) and find the differing knobs and the largest effect."""
    if not entries:
        raise LongtailError("no experiments to compare")
    ordered = sorted(entries, key=lambda e: (e.macro_f1 is None, -(e.macro_f1 or 0.0), e.name))
    knobs = differing_knobs([e.params for e in ordered])
    diffs = [e.lb_score - e.macro_f1 for e in ordered if e.lb_score is not None and e.macro_f1 is not None]
    return Leaderboard(entries=ordered, knobs=knobs, largest_effect=largest_effect(ordered, knobs),
                       lb_mean_difference=sum(diffs) / len(diffs) if diffs else None)


def _entry(run: Any) -> Entry:
    m, p = run.data.metrics, run.data.params
    end, start = run.info.end_time, run.info.start_time
    epochs = p.get("train.epochs")
    return Entry(
        run_id=run.info.run_id, name=p.get("name") or run.info.run_name or run.info.run_id,
        params=dict(p), macro_f1=m.get("eval_macro_f1"), accuracy=m.get("eval_accuracy"),
        weighted_f1=m.get("eval_weighted_f1"), epochs=int(epochs) if epochs and epochs.isdigit() else None,
        seconds=(end - start) / 1000.0 if end and start else None, lb_score=m.get("lb_score"),
        gate=run.data.tags.get("eval_gate"),
    )


def leaderboard_from_mlflow(tracking_uri: str, *, experiment: str | None = None,
                            parent_run_id: str | None = None) -> Leaderboard:
    """Build the leaderboard from MLflow after the fact.

    Args:
        experiment: every training run of this MLflow experiment (sweep parents excluded), or
        parent_run_id: only the children of this sweep run.

    Raises:
        LongtailError: the experiment does not exist or holds no training runs.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if parent_run_id:
        parent = client.get_run(parent_run_id)
        exp_ids = [parent.info.experiment_id]
        query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    else:
        exp = client.get_experiment_by_name(experiment or "")
        if exp is None:
            raise LongtailError(f"MLflow experiment {experiment!r} not found at {tracking_uri}")
        exp_ids, query = [exp.experiment_id], ""
    runs = client.search_runs(exp_ids, filter_string=query, max_results=5000)
    runs = [r for r in runs if r.data.tags.get(SWEEP_TAG) != "parent"]
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

    from longtail.config import flatten
    from longtail.tracking import (
        DESCRIPTION_TAG,
        KFP_TASK_RUN_TAG,
        ensure_experiment,
        git_commit,
        source_tags,
    )

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp_id = ensure_experiment(experiment, tracking_uri)
    knobs = differing_knobs([{k: str(v) for k, v in flatten(c).items()} for c in configs])
    tags = {SWEEP_TAG: "parent", **source_tags("longtail sweep", git_commit()),
            DESCRIPTION_TAG: (f"**Sweep {name}**: {len(configs)} experiments of `{experiment}` that differ in "
                              f"{', '.join(knobs) or 'nothing'}; its child runs are the experiments, ranked "
                              "by eval_macro_f1 in leaderboard.md.")}
    if task_run_id:
        from longtail.experiment_run import nesting_parent

        tags[KFP_TASK_RUN_TAG] = task_run_id
        task_run = nesting_parent(client, tracking_uri, None, task_run_id)
        if task_run is not None:
            exp_id = task_run.info.experiment_id
            tags["mlflow.parentRunId"] = task_run_id
    run = client.create_run(exp_id, run_name=name, tags=tags)
    client.log_param(run.info.run_id, "n_experiments", len(configs))
    client.set_tag(run.info.run_id, "longtail.sweep_knobs", ", ".join(knobs) or "(none)")
    return run.info.run_id


def finish_sweep_run(tracking_uri: str, parent_run_id: str, out_dir: str | Path, *,
                     register_as: str | None = None, gates: list[bool] | None = None) -> Leaderboard:
    """Rank the sweep's children, log the leaderboard to the parent run and register the best model.

    Args:
        gates: each experiment's evaluation gate result, reported as "N of M passed".

    Returns:
        The leaderboard; `leaderboard.md` is written into out_dir and logged to the parent run.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    board = leaderboard_from_mlflow(tracking_uri, parent_run_id=parent_run_id)
    recorded = [e.gate for e in board.entries if e.gate is not None]
    if recorded:  # every experiment of the sweep, including those of earlier data settings
        board.notes.append(f"{recorded.count('passed')} of {len(recorded)} experiments passed the evaluation gate")
    elif gates is not None:
        board.notes.append(f"{sum(map(bool, gates))} of {len(gates)} experiments passed the evaluation gate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "leaderboard.md"
    path.write_text(board.markdown("Sweep leaderboard"))
    best = board.best
    client.log_artifact(parent_run_id, str(path))
    client.log_metric(parent_run_id, "best_macro_f1", best.macro_f1 or 0.0)
    client.set_tag(parent_run_id, "best_run_id", best.run_id)
    client.set_tag(parent_run_id, "best_experiment", best.name)
    if board.largest_effect:
        client.set_tag(parent_run_id, "largest_effect", f"{board.largest_effect[0]} ({board.largest_effect[1]:.4f})")
    if register_as:
        from longtail.registry import CHAMPION, register_run_model, version_tags

        version = register_run_model(tracking_uri, best.run_id, register_as, alias=CHAMPION,
                                     tags=version_tags(best.name, best.macro_f1))
        client.set_tag(parent_run_id, "registered_model", f"{register_as} v{version}")
        board.notes.append(f"best model registered as `{register_as}` version {version}, alias `{CHAMPION}`")
    client.set_terminated(parent_run_id)
    return board


def pick_model_dir(model_dirs: list[str | Path], run_id: str) -> Path:
    """The model directory (among a sweep's) whose mlflow_run.json names `run_id`."""
    from longtail.tracking import RunInfo

    for d in model_dirs:
        info = RunInfo.load(d)
        if info is not None and info.run_id == run_id:
            return Path(d)
    raise LongtailError(f"none of the {len(model_dirs)} model directories belongs to run {run_id}")
