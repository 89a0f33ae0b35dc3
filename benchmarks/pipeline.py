"""Orchestration overhead: `longtail run` (kfp.local) against the same library calls made directly.

Both run the same experiment on the same small real dataset (digits-lt) in this process's Python;
the difference is what kfp.local adds: a subprocess and fresh imports per step, artifact copies,
executor I/O. Prints both wall times, the overhead in seconds and as a ratio.

    python benchmarks/pipeline.py [--epochs 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from longtail.class_weights import write_weights
from longtail.config import ingest_settings, load_config
from longtail.datasets import make_digits_lt
from longtail.evaluation import evaluate
from longtail.ingest import ingest
from longtail.prediction import predict
from longtail.tracking.store import default_tracking_uri
from longtail.training import train

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "demo.yaml"


def direct(cfg, data: Path, test: Path, work: Path, tracking_uri: str) -> float:
    """The five steps as plain library calls; returns seconds."""
    start = time.perf_counter()
    ingest(str(data), work / "data", **ingest_settings(cfg))
    ingest(str(test), work / "test", unlabelled=True, **ingest_settings(cfg))
    write_weights(work / "data" / "train.h5", work / "weights.json", scheme=cfg.weights.scheme, beta=cfg.weights.beta)
    result = train(cfg, work / "data" / "train.h5", work / "data" / "val.h5", work / "model",
                   weights_json=work / "weights.json", tracking_uri=tracking_uri, progress=False)
    ev = evaluate(result.model_dir, work / "data" / "val.h5", work / "evaluation",
                  min_macro_f1=cfg.evaluate.min_macro_f1, weights_json=work / "weights.json")
    if ev.passed:
        predict(result.model_dir, work / "test" / "test.h5", work / "submission.csv")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; the best is reported")
    args = parser.parse_args()

    from longtail.pipelines.local import run_local  # imports kfp: only here

    overrides = [f"train.epochs={args.epochs}", "evaluate.min_macro_f1=0.0", "data.image_size=16"]
    cfg = load_config(CONFIG, overrides)
    with tempfile.TemporaryDirectory(prefix="longtail-bench-") as tmp:
        root = Path(tmp)
        make_digits_lt(root / "digits", imbalance=10)
        data, test = root / "digits" / "train", root / "digits" / "test"
        direct_s, pipeline_s = [], []
        for i in range(args.repeats):
            work = root / f"direct-{i}"
            direct_s.append(direct(cfg, data, test, work, default_tracking_uri(work)))
            start = time.perf_counter()
            run_local(CONFIG, str(data), str(test), overrides=overrides, home=root / f"run-{i}")
            pipeline_s.append(time.perf_counter() - start)
    d, p = min(direct_s), min(pipeline_s)
    print()
    print(f"dataset: digits-lt (imbalance 10), {CONFIG.name} with {' '.join(overrides)}")
    print(f"library calls, direct          {d:7.1f} s   (runs: {', '.join(f'{x:.1f}' for x in direct_s)})")
    print(f"longtail run (kfp.local)       {p:7.1f} s   (runs: {', '.join(f'{x:.1f}' for x in pipeline_s)})")
    print(f"orchestration overhead         {p - d:7.1f} s   ({p / d:.2f}x the direct calls)")


if __name__ == "__main__":
    main()
