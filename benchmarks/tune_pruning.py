"""Does pruning pay? The same search with `--pruner median` and with `--pruner none`, same trials, same seed.

Runs `longtail tune` (the user's command) twice on one dataset with a search file, each study in its own
home, and prints for each: the trials (complete, pruned), the epochs trained in all, the wall time, and
the best trial's balanced val macro-F1 with its 95% interval. Then the two ratios the search issue asks
for: pruned epochs / unpruned epochs (want <= 0.5) and whether the pruned study's best lies within the
unpruned best's interval. The test labels are not used.

Then it replays the unpruned study through other pruners: its complete trials, in their order, each
reporting its recorded per-epoch figures to a fresh study's pruner (Optuna's own pruners, the steps
`longtail tune` reports), so the epochs each start share would spend and whether the
unpruned best survives come from one set of curves. A replay keeps the trials fixed: what the sampler
would have drawn after a prune is not in it. `--replay-only` replays a study already under ROOT.

Run: python benchmarks/tune_pruning.py [--search experiments/demo-search.yaml] [--data digits-lt]
     [--trials 12] [--seed 0] [--set data.image_size=16 ...] [--root .longtail/bench/tune-pruning]
     [--prune-after 60] [--replay-only]
A study already under ROOT goes on (or, with all its trials, is only read back), so a second median
start (`--prune-after`, its study in ROOT/median-from-P) reuses the unpruned one.
`--data digits-lt` (the default) or `fashion-mnist-lt` is made by `longtail data` under ROOT; any other
value is a folder of class folders.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna

from longtail.trial_metrics import PRUNE_AFTER_PERCENT
from longtail.tune_trials import schedule_steps

MADE = ("digits-lt", "fashion-mnist-lt")


def dataset(name: str, root: Path) -> Path:
    """The train folder: made by `longtail data` for a known name, else the folder given."""
    if name not in MADE:
        return Path(name)
    out = root / "data" / name
    if not (out / "train").is_dir():
        subprocess.run([sys.executable, "-m", "longtail.cli", "data", name, str(out)], check=True)
    return out / "train"


def study(search: str, data: Path, home: Path, pruner: str, args: argparse.Namespace) -> dict:
    """One `longtail tune` run (a study already under `home` goes on, or is only read back when it has
    its trials); its figures read back from the study's journal."""
    name = f"pruning-{pruner}"
    command = [sys.executable, "-m", "longtail.cli", "tune", search, "--data", str(data), "--trials", str(args.trials),
               "--seed", str(args.seed), "--pruner", pruner, "--study", name, "--home", str(home)]
    if pruner != "none":
        command += ["--prune-after", str(args.prune_after)]
    for override in args.overrides:
        command += ["--set", override]
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{home.resolve() / 'mlflow.db'}"}
    subprocess.run(command, check=True, env=env)
    trials = load_trials(home, name)
    # the trials' own wall time (a study that went on, or was only read back, counts each trial once)
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                  if t.datetime_complete and t.datetime_start)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    epochs = sum(int(t.user_attrs.get("epochs") or 0) for t in complete + pruned)  # the epochs each trial ran
    best = max(complete, key=lambda t: t.value)
    return {"pruner": pruner, "trials": len(trials), "complete": len(complete), "pruned": len(pruned),
            "epochs": epochs, "trial_seconds": seconds, "best_trial": best.number, "best": best.value,
            "best_low": best.user_attrs.get("low"), "best_high": best.user_attrs.get("high"),
            "best_params": best.params}


def load_trials(home: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    backend = optuna.storages.journal.JournalFileBackend(str(home / "tune" / name / "journal.log"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend)).trials


def epochs_of(trial: optuna.trial.FrozenTrial) -> int:
    """The epochs a trial's schedule has (recorded as it ran, else its sampled train.epochs)."""
    return int(trial.user_attrs.get("epochs") or trial.params["train.epochs"])


def replay(trials: list[optuna.trial.FrozenTrial], pruner: optuna.pruners.BasePruner) -> dict:
    """The complete trials, in order, through `pruner`: each epoch reports the percents it reaches
    (tune_trials.schedule_steps, as `longtail tune` does) with the figure recorded for them."""
    # A fixed name: Hyperband puts a trial in a bracket by a hash of the study's name and its number.
    replayed = optuna.create_study(study_name="replay", direction="maximize", pruner=pruner)
    epochs, pruned = 0, []
    for t in trials:
        length = epochs_of(t)
        live = replayed.ask()
        for epoch in range(1, length + 1):
            steps = schedule_steps(epoch, length)
            for step in steps:
                live.report(t.intermediate_values[step], step)
            if live.should_prune():
                replayed.tell(live, state=optuna.trial.TrialState.PRUNED)
                epochs, pruned = epochs + epoch, pruned + [(t.number, epoch)]
                break
        else:
            replayed.tell(live, t.value)
            epochs += length
    kept = [t for t, r in zip(trials, replayed.trials, strict=True) if r.state == optuna.trial.TrialState.COMPLETE]
    return {"epochs": epochs, "pruned": pruned, "best": max(kept, key=lambda t: t.value)}


def replays(root: Path, trials_asked: int, prune_after: int = PRUNE_AFTER_PERCENT) -> None:
    """Every start share of the median pruner, and Hyperband's rungs, over the unpruned study's curves."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per replayed in-memory study
    if not (root / "none" / "tune" / "pruning-none" / "journal.log").is_file():
        print(f"replay: no unpruned study under {root}/none; run this benchmark without --replay-only first")
        return
    trials = [t for t in load_trials(root / "none", "pruning-none") if t.state == optuna.trial.TrialState.COMPLETE]
    if not all(len(t.intermediate_values) == 100 for t in trials):
        print("replay: the unpruned study's steps are not percents of each schedule; run it again")
        return
    total = sum(epochs_of(t) for t in trials)
    best = max(trials, key=lambda t: t.value)
    startup = max(2, min(5, trials_asked // 4))  # as tune.make_pruner
    pruners = {f"median from {start}%": optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=start)
               for start in sorted({10, 20, 30, 40, 50, 60, 75, prune_after})}
    pruners |= {f"hyperband from {low}%": optuna.pruners.HyperbandPruner(min_resource=low, max_resource=100,
                                                                          reduction_factor=3) for low in (10, 20)}
    print(f"replay of the unpruned study: {len(trials)} complete trials, {total} epochs, "
          f"best trial {best.number} {best.value:.4f} ({best.user_attrs.get('low'):.4f}-{best.user_attrs.get('high'):.4f})")
    for name, pruner in pruners.items():
        r = replay(trials, pruner)
        within = best.user_attrs.get("low") <= r["best"].value <= best.user_attrs.get("high")
        stops = ", ".join(f"{n}@{e}" for n, e in r["pruned"]) or "none"
        print(f"  {name:>18}: {r['epochs']} epochs = {r['epochs'] / total:.2f}; best kept: trial "
              f"{r['best'].number} {r['best'].value:.4f} ({'within' if within else 'outside'}); "
              f"pruned (trial@epoch): {stops}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--search", default="experiments/demo-search.yaml")
    p.add_argument("--data", default="digits-lt")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--root", default=".longtail/bench/tune-pruning")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--prune-after", type=int, default=PRUNE_AFTER_PERCENT,
                   help="the median study's start, a percent of each schedule (tune --prune-after)")
    p.add_argument("--replay-only", action="store_true", help="only replay the unpruned study under ROOT")
    args = p.parse_args()
    root = Path(args.root)
    if args.replay_only:
        replays(root, args.trials, args.prune_after)
        return 0
    data = dataset(args.data, root)
    median_home = root / ("median" if args.prune_after == PRUNE_AFTER_PERCENT else f"median-from-{args.prune_after}")
    rows = [study(args.search, data, root / "none", "none", args), study(args.search, data, median_home, "median", args)]
    none, median = rows
    for r in rows:
        print(f"{r['pruner']:>6}: {r['trials']} trials ({r['complete']} complete, {r['pruned']} pruned), "
              f"{r['epochs']} epochs, {r['trial_seconds']:.0f} s of trials; best trial {r['best_trial']}: {r['best']:.4f} "
              f"({r['best_low']:.4f}-{r['best_high']:.4f})")
    ratio = median["epochs"] / none["epochs"]
    within = none["best_low"] <= median["best"] <= none["best_high"]
    print(f"epochs, median / none: {ratio:.2f} (want <= 0.50); median's best {median['best']:.4f} "
          f"{'within' if within else 'outside'} none's best interval {none['best_low']:.4f}-{none['best_high']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "epoch_ratio": ratio, "best_within": within}, indent=2))
    replays(root, args.trials, args.prune_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
