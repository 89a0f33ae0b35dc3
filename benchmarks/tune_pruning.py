"""Does pruning pay? The same search with `--pruner median` and with `--pruner none`, same trials, same seed.

Runs `longtail tune` (the user's command) twice on one dataset with a search file, each study in its own
home, and prints for each: the trials (complete, pruned), the epochs trained in all, the wall time, and
the best trial's balanced val macro-F1 with its 95% interval. Then the two ratios the search issue asks
for: pruned epochs / unpruned epochs (want <= 0.5) and whether the pruned study's best lies within the
unpruned best's interval. The test labels are not used.

Run: python benchmarks/tune_pruning.py [--search experiments/demo-search.yaml] [--data digits-lt]
     [--trials 12] [--seed 0] [--set data.image_size=16 ...] [--root .longtail/bench/tune-pruning]
`--data digits-lt` (the default) or `fashion-mnist-lt` is made by `longtail data` under ROOT; any other
value is a folder of class folders.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

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
    """One `longtail tune` run; its figures read back from the study's journal."""
    name = f"pruning-{pruner}"
    command = [sys.executable, "-m", "longtail.cli", "tune", search, "--data", str(data), "--trials", str(args.trials),
               "--seed", str(args.seed), "--pruner", pruner, "--study", name, "--home", str(home)]
    for override in args.overrides:
        command += ["--set", override]
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{home.resolve() / 'mlflow.db'}"}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    seconds = time.perf_counter() - started
    backend = optuna.storages.journal.JournalFileBackend(str(home / "tune" / name / "journal.log"))
    trials = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend)).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    epochs = sum(int(t.user_attrs.get("epochs") or 0) for t in complete + pruned)  # the epochs each trial ran
    best = max(complete, key=lambda t: t.value)
    return {"pruner": pruner, "trials": len(trials), "complete": len(complete), "pruned": len(pruned),
            "epochs": epochs, "seconds": seconds, "best_trial": best.number, "best": best.value,
            "best_low": best.user_attrs.get("low"), "best_high": best.user_attrs.get("high"),
            "best_params": best.params}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--search", default="experiments/demo-search.yaml")
    p.add_argument("--data", default="digits-lt")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--root", default=".longtail/bench/tune-pruning")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()
    root = Path(args.root)
    data = dataset(args.data, root)
    rows = [study(args.search, data, root / pruner, pruner, args) for pruner in ("none", "median")]
    none, median = rows
    for r in rows:
        print(f"{r['pruner']:>6}: {r['trials']} trials ({r['complete']} complete, {r['pruned']} pruned), "
              f"{r['epochs']} epochs, {r['seconds']:.0f} s; best trial {r['best_trial']}: {r['best']:.4f} "
              f"({r['best_low']:.4f}-{r['best_high']:.4f})")
    ratio = median["epochs"] / none["epochs"]
    within = none["best_low"] <= median["best"] <= none["best_high"]
    print(f"epochs, median / none: {ratio:.2f} (want <= 0.50); median's best {median['best']:.4f} "
          f"{'within' if within else 'outside'} none's best interval {none['best_low']:.4f}-{none['best_high']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "epoch_ratio": ratio, "best_within": within}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
