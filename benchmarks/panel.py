"""A config against a plain baseline on a panel of datasets: does its advice carry over?

`experiments/demo.yaml` is the template users copy for their own data. Its levers were first chosen on
one split (Fashion-MNIST-LT IF 100, seed 0). This runs the config and a plain baseline with
`longtail run` (kfp.local, the user's path) on each row of a panel, and prints per row:
- the balanced test macro-F1 of each (the submission scored against the held-out labels);
- the paired bootstrap 95% interval of the difference, config minus baseline, on the same test images
  (longtail.scoring.paired_gains);
- each train step's wall time, as `longtail run` prints it ("train done in ...").

The baseline is the config with every lever a user might doubt switched off: cross-entropy instead of
the logit-adjusted loss, no weight averaging, no random erasing, no flip (augmentation or TTA), no
shift TTA, post-hoc tau 0. It keeps the model, the optimizer, the LR schedule, the shift augmentation,
the batch size rule (train.min_steps_per_epoch) and the epochs.

Rows (the datasets are made by `longtail data` into ROOT/data and kept):
- digits-30, digits-3: digits-lt at its default imbalance (10), 30 and 3 epochs;
- fmnist-if100-s0/s1/s2: Fashion-MNIST-LT IF 100, split seeds 0, 1, 2; fmnist-if10: IF 10, seed 0;
- scaled-209: a 209-class scaled-lt subset (20k images, ~128 px JPEG/PNG) at 32 px;
- photos: photos-lt (a few hundred colour crops in 8 classes), 100 epochs.
The Fashion-MNIST and scaled rows take --epochs (default: the config's own); the others keep theirs.

Run: python benchmarks/panel.py [--config experiments/demo.yaml] [--rows digits-3,photos] [--epochs 20]
     [--root .longtail/panel] [--out panel.json]
Every evaluation gate is opened (evaluate.min_macro_f1=0) so both sides always submit.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BASELINE = [
    "train.loss.name=cross_entropy", "train.loss.args={}", "train.optimizer.ema=0", "train.augmentation.erase=0",
    "train.augmentation.flip=false", "evaluate.tta=false", "evaluate.tta_shift=0", "evaluate.posthoc_tau=0",
]
OPEN_GATE = ["evaluate.min_macro_f1=0"]


@dataclass(frozen=True)
class Row:
    """One panel row: a dataset made by `longtail data`, and what the row sets on both sides."""

    name: str
    data: list[str]  # `longtail data` arguments before OUT
    overrides: list[str] = field(default_factory=list)
    takes_epochs: bool = False  # --epochs applies to this row


ROWS = [
    Row("digits-30", ["digits-lt"], ["train.epochs=30"]),
    Row("digits-3", ["digits-lt"], ["train.epochs=3"]),
    Row("fmnist-if100-s0", ["fashion-mnist-lt", "--seed", "0"], takes_epochs=True),
    Row("fmnist-if100-s1", ["fashion-mnist-lt", "--seed", "1"], takes_epochs=True),
    Row("fmnist-if100-s2", ["fashion-mnist-lt", "--seed", "2"], takes_epochs=True),
    Row("fmnist-if10", ["fashion-mnist-lt", "--imbalance", "10"], takes_epochs=True),
    Row("scaled-209", ["scaled-lt", "--images", "20000", "--source-size", "128", "--imbalance", "100"],
        ["data.image_size=32"], takes_epochs=True),
    Row("photos", ["photos-lt"], ["train.epochs=100"]),
]


@dataclass
class Side:
    """One side of a row: its balanced test figure, its per-image predictions, its train time."""

    test_macro_f1: float
    val_macro_f1: float | None
    train_seconds: float
    epochs: int
    batch: int | None
    predictions: list[int]


def longtail(*args: str, log: Path | None = None) -> str:
    """Run the `longtail` CLI of this environment; its output (also kept in `log`), or exit with it on failure."""
    cmd = [str(Path(sys.executable).with_name("longtail")), *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ)
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def dataset(root: Path, row: Row) -> Path:
    """The row's dataset folder, made once."""
    out = root / "data" / "-".join(a.lstrip("-") for a in row.data)
    if not (out / "test_labels.csv").is_file():
        print(f"  making {out.name} ...", flush=True)
        longtail("data", *row.data, str(out))
    return out


def printed(output: str, label: str) -> str | None:
    """The value `longtail run` printed after `label:` in its closing lines."""
    for line in output.splitlines():
        if line.strip().startswith(label + ":"):
            return line.split(":", 1)[1].strip()
    return None


def run_side(config: Path, data: Path, overrides: list[str], home: Path, name: str) -> Side:
    """`longtail run` one side of a row, and read back its submission, figures and train time."""
    args = ["run", str(config), "--data", str(data / "train"), "--test", str(data / "test"),
            "--labels", str(data / "test_labels.csv"), "--home", str(home)]
    for o in overrides:
        args += ["--set", o]
    home.mkdir(parents=True, exist_ok=True)
    out = longtail(*args, log=home / f"{name}.log")
    submission, model = printed(out, "submission"), printed(out, "model")
    test = printed(out, "test macro-F1")
    if not submission or not model or not test or submission.startswith("skipped"):
        sys.exit(f"{name}: no scored submission in the output of longtail run (log: {home / f'{name}.log'})")
    val = printed(out, "val macro-F1")
    history = json.loads((Path(model) / "history.json").read_text())
    params = _run_params(Path(model))
    took = re.search(r"train done in (?:(\d+)h )?(?:(\d+)m ?)?(?:(\d+) ?s)?", out)
    if not took:
        sys.exit(f"{name}: no 'train done in' line in the output of longtail run (log: {home / f'{name}.log'})")
    hours, minutes, seconds = (int(g or 0) for g in took.groups())
    return Side(test_macro_f1=float(test.split()[0]), val_macro_f1=float(val.split()[0]) if val else None,
                train_seconds=float(3600 * hours + 60 * minutes + seconds), epochs=len(history.get("loss", [])),
                batch=int(params["train.batch_size_used"]) if "train.batch_size_used" in params else None,
                predictions=_predictions(Path(submission), data / "test_labels.csv"))


def _run_params(model_dir: Path) -> dict[str, str]:
    """The MLflow params of the model's run (empty when it has none)."""
    import mlflow

    info = json.loads((model_dir / "mlflow_run.json").read_text()) if (model_dir / "mlflow_run.json").is_file() else {}
    if not info.get("run_id"):
        return {}
    return dict(mlflow.MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.params)


def _labels(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        return {r["id"]: r["label"] for r in csv.DictReader(f)}


def _predictions(submission: Path, labels_csv: Path) -> list[int]:
    """The submission's labels as class indices, in the order of the labels file's sorted ids."""
    truth, predicted = _labels(labels_csv), _labels(submission)
    names = sorted(set(truth.values()))
    index = {n: i for i, n in enumerate(names)}
    return [index.get(predicted[i], -1) for i in sorted(truth)]


def truth_indices(labels_csv: Path) -> tuple[list[int], int]:
    truth = _labels(labels_csv)
    names = sorted(set(truth.values()))
    index = {n: i for i, n in enumerate(names)}
    return [index[truth[i]] for i in sorted(truth)], len(names)


def compare(row: Row, config: Path, root: Path, epochs: int | None) -> dict:
    """Both sides of one row, and the paired interval of their difference."""
    from longtail.scoring import paired_gains

    data = dataset(root, row)
    common = OPEN_GATE + row.overrides + ([f"train.epochs={epochs}"] if epochs and row.takes_epochs else [])
    home = root / "runs" / row.name
    sides = {}
    for name, extra in (("baseline", BASELINE), ("config", [])):
        start = time.perf_counter()
        sides[name] = run_side(config, data, common + extra, home, name)
        print(f"  {row.name} {name}: balanced test {sides[name].test_macro_f1:.4f}, train "
              f"{sides[name].train_seconds:.0f} s ({time.perf_counter() - start:.0f} s in all)", flush=True)
    y, n_classes = truth_indices(data / "test_labels.csv")
    preds = np.array([sides["baseline"].predictions, sides["config"].predictions])
    # A label the model never saw (-1) cannot be a class: it only counts as wrong.
    preds[preds < 0] = n_classes
    gain = paired_gains(y, preds, n_classes + 1, balanced=True)[1]
    return {"row": row.name, "overrides": common, "gain": gain.gain, "low": gain.low, "high": gain.high,
            **{name: {k: v for k, v in asdict(s).items() if k != "predictions"} for name, s in sides.items()}}


def table(results: list[dict]) -> str:
    lines = ["| row | epochs | baseline | config | config - baseline (paired 95%) | train s, baseline / config |",
             "|---|---:|---:|---:|---|---:|"]
    for r in results:
        b, c = r["baseline"], r["config"]
        verdict = "" if r["low"] <= 0 <= r["high"] or r["low"] > 0 else " **worse**"
        lines.append(f"| {r['row']} | {c['epochs']} | {b['test_macro_f1']:.4f} | {c['test_macro_f1']:.4f} | "
                     f"{r['gain']:+.4f} ({r['low']:+.4f} to {r['high']:+.4f}){verdict} | "
                     f"{b['train_seconds']:.0f} / {c['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "demo.yaml"))
    parser.add_argument("--rows", default=",".join(r.name for r in ROWS), help="comma-separated row names")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the Fashion-MNIST and scaled rows")
    parser.add_argument("--root", default=str(REPO / ".longtail" / "panel"))
    parser.add_argument("--out", default=None, help="also write the results as JSON here (appended per row)")
    args = parser.parse_args()
    wanted = args.rows.split(",")
    unknown = sorted(set(wanted) - {r.name for r in ROWS})
    if unknown:
        sys.exit(f"unknown rows {unknown}; the panel has {[r.name for r in ROWS]}")
    root, config = Path(args.root).resolve(), Path(args.config).resolve()
    results = []
    out = Path(args.out) if args.out else None
    if out and out.is_file():
        results = [r for r in json.loads(out.read_text()) if r["row"] not in wanted]
    for row in (r for r in ROWS if r.name in wanted):
        print(f"{row.name}:", flush=True)
        results.append(compare(row, config, root, args.epochs))
        if out:
            out.write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
