"""Where a training step's time goes at each precision: oneDNN's convolutions and reorders against the rest.

Each (size, precision) runs in its own process with ONEDNN_VERBOSE=1, which prints every oneDNN primitive
it executes with its time. The demo's model (experiments/demo.yaml) trains `--steps` batches after three
warm-up batches, one op at a time (inter-op parallelism 1, so the times add up). Per step it prints the
wall and CPU time, the time in each oneDNN primitive kind (convolution forward and backward, reorder,
matmul, and batch normalization where it is fused), and the rest: TensorFlow's own kernels (Keras' batch norm,
ReLU, adds, casts, the optimizer, the loss). `--batch-norms keras,fused` profiles the model as its builder makes
it (Keras' BatchNormalization) and as `longtail train` trains it (longtail.models.fused_batch_norm).
Run: python benchmarks/train_profile.py [--sizes 28,64] [--steps 8] [--precisions float32,mixed_bfloat16]
     [--batch-norms keras,fused]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from longtail.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"
START, END = "@@profile-start", "@@profile-end"


def child(policy: str, size: int, steps: int, batch_norm: str) -> None:
    """Train `steps` batches under `policy`, between markers on stdout; print wall and CPU seconds at the end."""
    import keras
    import numpy as np
    import tensorflow as tf

    from longtail.models import build_model  # imports Keras
    from longtail.models.fused_batch_norm import with_fused_batch_norm

    tf.config.threading.set_inter_op_parallelism_threads(1)
    cfg = load_config(CONFIG, [])
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model.name, (size, size, 3), 10, **cfg.model.args)
    if batch_norm == "fused":
        model = with_fused_batch_norm(model)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    batch = cfg.train.batch_size
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    y = np.arange(batch) % 10
    for _ in range(3):
        model.train_on_batch(x, y)
    print(START, flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.train_on_batch(x, y)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{END} {wall} {cpu}", flush=True)


def profile(policy: str, size: int, steps: int, batch_norm: str) -> dict[str, float]:
    """Run one child; milliseconds per step: wall, cpu, and each oneDNN primitive kind."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, __file__, "--child", policy, str(size), str(steps), batch_norm],
                          capture_output=True, text=True, env=env, check=True)
    per_kind: dict[str, float] = defaultdict(float)
    inside, wall, cpu = False, 0.0, 0.0
    for line in done.stdout.splitlines():
        if line.startswith(START):
            inside = True
        elif line.startswith(END):
            wall, cpu = (float(v) for v in line.split()[1:3])
            inside = False
        elif inside and line.startswith("onednn_verbose") and ",exec,cpu," in line:
            fields = line.split(",")
            kind = fields[5]
            if kind == "convolution":
                kind += " " + ("backward" if "backward" in fields[7] else "forward")
            per_kind[kind] += float(fields[-1])
    row = {kind: ms / steps for kind, ms in per_kind.items()}
    row["wall"], row["cpu"] = 1000 * wall / steps, 1000 * cpu / steps
    row["rest"] = row["wall"] - sum(ms for kind, ms in row.items() if kind not in ("wall", "cpu"))
    return row


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="28,64")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--batch-norms", default="keras,fused")
    args = parser.parse_args()
    columns = [(p, bn) for bn in args.batch_norms.split(",") for p in args.precisions.split(",")]
    names = [f"{p.replace('mixed_', '')} {bn} BN" for p, bn in columns]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; ms per training step of "
          f"{load_config(CONFIG, []).train.batch_size} images")
    for size in (int(s) for s in args.sizes.split(",")):
        rows = [profile(p, size, args.steps, bn) for p, bn in columns]
        kinds = sorted({k for row in rows for k in row} - {"wall", "cpu", "rest"})
        print(f"\n{size}x{size} px             " + "".join(f"{n:>20s}" for n in names))
        for kind in ["wall", "cpu", *kinds, "rest"]:
            label = {"rest": "rest (TF kernels)", "cpu": "CPU time"}.get(kind, kind)
            print(f"  {label:30s}" + "".join(f"{row.get(kind, 0.0):20.1f}" for row in rows))
        a = rows[0]
        for name, b in zip(names[1:], rows[1:], strict=True):
            conv = sum(a.get(k, 0) for k in kinds if "conv" in k) / max(sum(b.get(k, 0) for k in kinds if "conv" in k), 1e-9)
            print(f"  {names[0]} / {name}: wall {a['wall'] / b['wall']:.2f}x, CPU {a['cpu'] / b['cpu']:.2f}x, "
                  f"convolutions {conv:.2f}x, rest {a['rest'] / max(b['rest'], 1e-9):.2f}x")
    print(f"(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
