"""Each pipeline step's cost at the seed's scale: wall time, throughput and peak RSS against N, with growth exponents.

For each N (default 10k, 30k, 100k labelled images over 209 classes) it:
1. writes `longtail data scaled-lt` (JPEG/PNG around 256 px, max/min class 600, a balanced test set
   of 0.2 N images with held-out labels);
2. runs `longtail run` on it (the whole pipeline through kfp.local: ingest of the labelled and the
   test folder at 64 px, weights, 1 epoch of training, evaluate, submit/predict, scoring);
3. runs the streamed HDF5 loader (with the run's `train.memory_budget_mb`, so its group size,
   parallelism and prefetch are the ones training used) and the classic h5py generator
   (benchmarks/loader.py) over the run's train split, each in its own process, after a third process
   that does the same imports and reads nothing (the baseline their RSS is measured above).
A poller samples the process tree every 0.2 s (psutil) and charges each process to the kfp.local
step whose executor started it (`--function_to_execute`); a step's peak RSS is the largest sum of
its processes' RSS at one sample (shared pages of forked workers count once per process, so this
errs high). Step time runs from its first process's start (psutil create_time) to the last sample
that saw one of them alive, so it is exact to the 0.2 s poll.
"orchestrator" is the `longtail run` process itself: its RSS is kfp.local's and MLflow's, its time the
whole run's.

The model is small_cnn, not the demo's ResNet: this measures how each step's cost grows with N
(I/O, decode, HDF5, the loader, prediction over 209 classes), and one epoch of ResNet-20 at 64 px
over 87k images would take hours on 2 shared CPU cores without changing any step but train's
constant factor. The run sets `train.memory_budget_mb` (default 64) below every N's train split,
so training streams from HDF5 at every N: the path whose memory must stay flat.

    python benchmarks/scale.py [--sizes 10000,30000,100000] [--classes 209] [--out .longtail/bench-scale]

Prints a table per step, the log-log growth exponents of time and RSS in N, the loader ratios, and
writes scale.json and scale.png (time and RSS per step against N) into --out.
Targets: every step's peak RSS < 3 GB with exponent <= 0.1; time exponent <= 1.1; streamed loader
>= 2x the generator, with its peak RSS above the baseline within `--budget-mb`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The benchmark's experiment: the seed's 64 px, 1 epoch, effective-number weights, no gate (so
# submit/predict always runs), a small model (see the module docstring).
CONFIG = """\
name: scale
experiment: longtail-scale
data: {{image_size: 64, val_fraction: 0.2}}
preprocess: {{scale: scale}}
weights: {{scheme: effective-number, beta: 0.999}}
model: {{name: small_cnn, args: {{width: 16}}}}
train:
  epochs: 1
  batch_size: 128
  optimizer: {{name: adam}}
  lr: {{schedule: constant, initial: 0.001}}
  augmentation: {{flip: true, shift: 0.1}}
  memory_budget_mb: {budget}
evaluate: {{min_macro_f1: 0.0}}
"""
POLL_S = 0.2
# A step shorter than this is a few samples of its start-up: its time and RSS are not fitted or plotted.
MIN_STEP_S = 1.0


@dataclass
class StepCost:
    """One step's wall time (first to last sample of its processes) and peak RSS of its process tree."""

    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    items: int = 0
    first: float = field(default=float("inf"), repr=False)
    last: float = field(default=0.0, repr=False)


class TreePoller:
    """Samples a process and its descendants; charges each to a step by its (or an ancestor's) command line."""

    def __init__(self, root: psutil.Process, default_step: str) -> None:
        self.root = root
        self.default = default_step
        self.steps: dict[str, StepCost] = {}
        self._step_of: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _step(self, proc: psutil.Process) -> str:
        if proc.pid in self._step_of:
            return self._step_of[proc.pid]
        step = None
        try:
            cmd = proc.cmdline()
            if "--function_to_execute" in cmd:
                step = cmd[cmd.index("--function_to_execute") + 1]
                if step == "ingest" and "--executor_input" in cmd:
                    params = json.loads(cmd[cmd.index("--executor_input") + 1])["inputs"]["parameterValues"]
                    step = "ingest-test" if params.get("unlabelled") else "ingest-train"
            elif proc.pid != self.root.pid and proc.ppid() != self.root.pid:
                step = self._step(psutil.Process(proc.ppid()))
        except (psutil.Error, ValueError, KeyError, IndexError):
            pass
        self._step_of[proc.pid] = step = step or self.default
        return step

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            rss: dict[str, float] = {}
            born: dict[str, float] = {}
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    mb = p.memory_info().rss / 2**20
                    step = self._step(p)
                    started = p.create_time()
                except psutil.Error:
                    continue
                rss[step] = rss.get(step, 0.0) + mb
                born[step] = min(born.get(step, now), started)
            for step, mb in rss.items():
                cost = self.steps.setdefault(step, StepCost())
                cost.peak_rss_mb = max(cost.peak_rss_mb, mb)
                cost.first, cost.last = min(cost.first, born[step]), now
                cost.seconds = cost.last - cost.first
            self._stop.wait(POLL_S)


def measured(cmd: list[str], step: str, log_path: Path, env: dict[str, str] | None = None) -> tuple[float, dict[str, StepCost], str]:
    """Run `cmd`, sampling its process tree; returns (wall seconds, cost per step, stdout)."""
    start = time.perf_counter()
    with log_path.open("a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, env=env)
        with TreePoller(psutil.Process(proc.pid), step) as poller:
            out, _ = proc.communicate()
        log.write(out)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed with exit {proc.returncode}; see {log_path}")
    return time.perf_counter() - start, poller.steps, out


def one_size(n: int, classes: int, budget: int, batches: int, work: Path, log_path: Path) -> dict:
    """Generate, run the pipeline and the two loaders at N images; returns the measurements."""
    data, home = work / f"scaled-{n}", work / f"home-{n}"
    shutil.rmtree(home, ignore_errors=True)
    seconds, cost, _ = measured([str(BIN / "longtail"), "data", "scaled-lt", str(data), "--classes", str(classes),
                                 "--images", str(n)], "data", log_path)
    summary = json.loads((data / "dataset.json").read_text())
    steps = {"data": cost["data"]}
    steps["data"].items = summary["n_train"] + summary["n_test"]
    config = work / "scale.yaml"
    config.write_text(CONFIG.format(budget=budget))
    wall, cost, out = measured([str(BIN / "longtail"), "run", str(config), "--data", str(data / "train"),
                                "--test", str(data / "test"), "--labels", str(data / "test_labels.csv"),
                                "--home", str(home)], "orchestrator", log_path)
    manifests = [json.loads(p.read_text()) for p in home.rglob("ingest.json")]
    labelled = next(m for m in manifests if "train" in m["splits"])
    n_train, n_val = labelled["splits"]["train"], labelled["splits"]["val"]
    items = {"ingest-train": n, "ingest-test": summary["n_test"], "weights": n_train, "train": n_train,
             "evaluate": n_val, "submit": summary["n_test"]}
    for step, c in cost.items():
        c.items = items.get(step, 0)
        steps[step] = c
    f1 = [line.split()[-1] for line in out.splitlines() if "val macro-F1:" in line]
    train_h5 = next(home.rglob("train.h5"))
    loaders = {}
    for kind in ("baseline", "streamed", "generator"):
        seconds, cost, lout = measured([sys.executable, __file__, "--measure-loader", kind, "--h5", str(train_h5),
                                        "--batches", str(batches), "--budget-mb", str(budget)], "loader", log_path)
        loaders[kind] = {**json.loads(lout.strip().splitlines()[-1]), "peak_rss_mb": cost["loader"].peak_rss_mb}
    loaders["split_mb"] = train_h5.stat().st_size / 2**20
    loaders["budget_mb"] = budget
    return {"n": n, "classes": classes, "n_train": n_train, "n_val": n_val, "n_test": summary["n_test"],
            "pipeline_wall_s": wall, "val_macro_f1": f1[-1] if f1 else None,
            "steps": {k: asdict(v) for k, v in steps.items()}, "loaders": loaders}


def measure_loader(kind: str, h5: Path, batches: int, budget_mb: float) -> None:
    """In its own process: batches/s of one loader over `batches` batches (after 20 warm-up), as JSON.

    The streamed loader gets `budget_mb` as train.memory_budget_mb, which sizes what it holds; the
    benchmark's budget is below every train split, so it streams.
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from loader import generator_dataset

    from longtail.input_pipeline import make_dataset
    from longtail.preprocessing import Preprocessing
    from longtail.splits import read_info

    pre = Preprocessing.from_split(read_info(h5), "scale")
    if kind == "baseline":  # the same imports and nothing read: the floor under both loaders' RSS
        import tensorflow as tf

        tf.constant(0)
        time.sleep(1.0)
        print(json.dumps({"batches_per_s": 0.0, "batches": 0}))
        return
    if kind == "streamed":
        sd = make_dataset(h5, pre, batch_size=128, training=True, augmentation=None, memory_budget_mb=budget_mb)
        if sd.in_memory:
            raise SystemExit(f"{h5} fits --budget-mb {budget_mb:g}: lower it to measure the streamed loader")
        ds = sd.dataset
    else:
        ds = generator_dataset(h5, 128, pre)
    it = iter(ds.repeat())
    for _ in range(20):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    print(json.dumps({"batches_per_s": batches / (time.perf_counter() - start), "batches": batches}))


def measurable(results: list[dict]) -> list[str]:
    """Steps seen at every N and lasting at least MIN_STEP_S each time."""
    return [step for step in results[-1]["steps"]
            if all(step in r["steps"] and r["steps"][step]["seconds"] >= MIN_STEP_S for r in results)]


def exponent(ns: list[int], values: list[float]) -> float:
    """Slope of log(value) against log(N): 1 is linear growth, 0 flat."""
    if len(ns) < 2 or min(values) <= 0:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def plot(results: list[dict], path: Path) -> None:
    """Time and peak RSS per step against N, log-log, side by side."""
    from matplotlib.figure import Figure

    ns = [r["n"] for r in results]
    fig = Figure(figsize=(12, 5), dpi=100)
    ax_t, ax_m = fig.subplots(1, 2)
    for step in measurable(results):
        ax_t.plot(ns, [r["steps"][step]["seconds"] for r in results], marker="o", label=step)
        ax_m.plot(ns, [r["steps"][step]["peak_rss_mb"] for r in results], marker="o", label=step)
    for ax, label in ((ax_t, "wall time, s"), (ax_m, "peak RSS of the step's processes, MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"labelled images N ({results[-1]['classes']} classes)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.axhline(3072, color="tab:red", linestyle="--", linewidth=1, label="3 GB target")
    ax_t.legend(fontsize=8)
    ax_m.legend(fontsize=8)
    fig.suptitle(f"longtail run, 1 epoch small_cnn at 64 px, on scaled-lt ({os.cpu_count()} CPUs)")
    fig.tight_layout()
    fig.savefig(path)


def report(results: list[dict]) -> None:
    """Print the per-step table, the exponents and the loader ratios."""
    ns = [r["n"] for r in results]
    print()
    for r in results:
        print(f"N = {r['n']} ({r['classes']} classes; train {r['n_train']}, val {r['n_val']}, test {r['n_test']}): "
              f"pipeline {r['pipeline_wall_s']:.0f} s, val macro-F1 {r['val_macro_f1']}")
        for step, c in r["steps"].items():
            rate = f"{c['items'] / c['seconds']:8.0f} img/s" if c["items"] and c["seconds"] else " " * 14
            print(f"  {step:14s} {c['seconds']:8.1f} s {rate} {c['peak_rss_mb']:8.0f} MB peak RSS")
    if len(results) > 1:
        print(f"\ngrowth exponents from N = {ns[0]} to {ns[-1]} (log-log slope; targets: time <= 1.1, RSS <= 0.1)")
        short = [s for s in results[-1]["steps"] if s not in measurable(results)]
        if short:
            print(f"  {', '.join(short)}: under {MIN_STEP_S:g} s at some N, too short for 0.2 s polling to time or "
                  "catch at its peak: not fitted")
        for step in measurable(results):
            t = exponent(ns, [r["steps"][step]["seconds"] for r in results])
            m = exponent(ns, [r["steps"][step]["peak_rss_mb"] for r in results])
            peak = max(r["steps"][step]["peak_rss_mb"] for r in results)
            print(f"  {step:14s} time {t:5.2f}   RSS {m:5.2f}   largest peak RSS {peak:6.0f} MB")
    print("\nloader over the run's train split (batch 128), each in its own process; RSS: peak above a process "
          "with the same imports that reads nothing (baseline)")
    for r in results:
        s, g, b = (r["loaders"][k] for k in ("streamed", "generator", "baseline"))
        budget = r["loaders"].get("budget_mb")
        held = s["peak_rss_mb"] - b["peak_rss_mb"]
        within = "" if budget is None else f" vs budget {budget} MB: {'within' if held <= budget else 'OVER'}"
        print(f"  N = {r['n']:6d} split {r['loaders']['split_mb']:6.0f} MB | streamed {s['batches_per_s']:7.1f} batches/s "
              f"+{held:4.0f} MB{within} | h5py generator {g['batches_per_s']:7.1f} batches/s "
              f"+{g['peak_rss_mb'] - b['peak_rss_mb']:4.0f} MB | streamed {s['batches_per_s'] / g['batches_per_s']:4.1f}x "
              "the generator (target >= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,30000,100000", help="comma-separated N (labelled images)")
    parser.add_argument("--classes", type=int, default=209)
    parser.add_argument("--budget-mb", type=int, default=64, help="train.memory_budget_mb for the runs")
    parser.add_argument("--batches", type=int, default=300, help="timed batches per loader")
    parser.add_argument("--out", default=str(REPO / ".longtail" / "bench-scale"), help="results, logs and work files")
    parser.add_argument("--keep", action="store_true", help="keep each N's data and pipeline root")
    parser.add_argument("--report", metavar="SCALE_JSON", help="only print the tables and draw the plot of a past run")
    parser.add_argument("--measure-loader", choices=["baseline", "streamed", "generator"], help=argparse.SUPPRESS)
    parser.add_argument("--h5", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_loader:
        measure_loader(args.measure_loader, Path(args.h5), args.batches, args.budget_mb)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        results = json.loads(Path(args.report).read_text())
        report(results)
        plot(results, out / "scale.png")
        print(f"\nwrote {out / 'scale.png'}")
        return
    log_path = out / "scale.log"
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; step output in {log_path}")
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        start = time.perf_counter()
        results.append(one_size(n, args.classes, args.budget_mb, args.batches, out, log_path))
        print(f"N = {n}: done in {time.perf_counter() - start:.0f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
        (out / "scale.json").write_text(json.dumps(results, indent=1))
        if not args.keep:
            shutil.rmtree(out / f"scaled-{n}", ignore_errors=True)
            shutil.rmtree(out / f"home-{n}", ignore_errors=True)
    report(results)
    plot(results, out / "scale.png")
    print(f"\nwrote {out / 'scale.json'} and {out / 'scale.png'}")


if __name__ == "__main__":
    main()
