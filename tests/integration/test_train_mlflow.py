"""`longtail train` through the CLI into a SQLite MLflow store: params, per-epoch metrics, curves, a loadable model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from longtail.splits import write_split

pytestmark = pytest.mark.slow


def digits_lt_splits(root: Path) -> tuple[Path, Path]:
    """scikit-learn's digits, long-tailed (180 -> 18 per class, imbalance 10), as train/val splits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = np.kron(np.clip(d.images * 16, 0, 255).astype(np.uint8), np.ones((2, 2), np.uint8))
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rng = np.random.default_rng(0)
    counts = [int(round(160 * 0.1 ** (c / 9))) for c in range(10)]
    rows = {c: rng.permutation(np.flatnonzero(d.target == c))[: n + 10] for c, n in enumerate(counts)}
    tr = np.concatenate([r[10:] for r in rows.values()])
    va = np.concatenate([r[:10] for r in rows.values()])
    common = dict(class_names=[f"digit_{c}" for c in range(10)], image_size=16, source_fingerprint="digits-lt",
                  preprocessing={"image_size": 16, "resize": "stretch", "clahe": False, "white_balance": False})
    train_h5 = write_split(root / "train.h5", rgb[tr], [f"{i}.png" for i in tr], labels=d.target[tr].astype(np.int32),
                           mean_rgb=rgb[tr].reshape(-1, 3).mean(axis=0).tolist(), **common)
    val_h5 = write_split(root / "val.h5", rgb[va], [f"{i}.png" for i in va], labels=d.target[va].astype(np.int32),
                         **common)
    return train_h5, val_h5


def test_train_cli_logs_a_complete_mlflow_run(tmp_path: Path) -> None:
    import mlflow

    from longtail.class_weights import write_weights

    train_h5, val_h5 = digits_lt_splits(tmp_path / "data")
    weights = tmp_path / "weights.json"
    write_weights(train_h5, weights, "effective-number", 0.99)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny-digits", "experiment": "integration",
        "model": {"name": "resnet_cifar", "args": {"stages": [1, 1], "filters": [8, 16, 32]}},
        "train": {"epochs": 2, "batch_size": 32, "lr": {"schedule": "poly", "initial": 0.05, "power": 2.5},
                  "label_smoothing": {"factor": 0.1, "mode": "labels"}},
    }))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model_dir = tmp_path / "model"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run(
        [sys.executable, "-m", "longtail.cli", "train", str(config), "--train", str(train_h5), "--val", str(val_h5),
         "--weights", str(weights), "--out", str(model_dir), "--set", "train.seed=1", "--set", "evaluate.posthoc_tau=tune", "--register-as", "tiny"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained tiny-digits: 2 epochs" in out.stdout
    assert "registered tiny version 1 (alias candidate)" in out.stdout  # the post-run step run and sweep share

    assert {p.name for p in model_dir.iterdir()} >= {"model.keras", "preprocessing.json", "config.yaml",
                                                     "mlflow_run.json", "history.json", "curves.png"}
    run_info = json.loads((model_dir / "mlflow_run.json").read_text())
    assert run_info["tracking_uri"] == uri and run_info["experiment"] == "integration"

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-digits"
    params = run.data.params
    assert params["train.label_smoothing.mode"] == "labels"
    assert params["train.seed"] == "1"  # the --set override, resolved
    version = client.get_model_version_by_alias("tiny", "candidate")
    assert version.run_id == run.info.run_id and version.tags["config"] == "tiny-digits"
    assert version.tags["val_macro_f1"] == f"{json.loads((model_dir / 'history.json').read_text())['val_macro_f1'][-1]:.4f}"
    assert params["model.args.stages"] == "[1, 1]"
    assert params["data.classes"] == "10" and params["data.train_samples"] == str(read_rows(train_h5))
    assert float(params["weights.max"]) > float(params["weights.min"])
    assert run.data.tags["data.fingerprint"] == "digits-lt"
    assert params["evaluate.target_prior"] == "balanced"
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "val_macro_f1_plain",
                   "learning_rate"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [0, 1], metric
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "learning_rate")]
    assert lrs == pytest.approx([0.05, 0.05 * 0.5**2.5])

    # MLflow 3 resolves runs:/<run>/model to the run's LoggedModel through the global tracking URI.
    mlflow.set_tracking_uri(uri)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "history.json", "config.yaml", "preprocessing.json", "posthoc_tau.png"} <= artifacts
    # The tuned tau, the best on val, and for a best tau > 0 the paired interval of its val gain over
    # no adjustment: adopted only when that interval lies above zero.
    metrics = run.data.metrics
    assert metrics["posthoc_tau"] == json.loads((model_dir / "logit_adjustment.json").read_text())["tau"]
    best = metrics["posthoc_tau_val_best"]
    if best > 0:
        low, high = metrics["val_macro_f1_posthoc_gain_low"], metrics["val_macro_f1_posthoc_gain_high"]
        assert low <= high and metrics["posthoc_tau"] == (best if low > 0 else 0.0)
    else:
        assert metrics["posthoc_tau"] == 0.0 and "val_macro_f1_posthoc_gain_low" not in metrics
    model_files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/MLmodel", "model/preprocessing.json"} <= model_files
    signature = json.loads(yaml.safe_load(Path(client.download_artifacts(
        run.info.run_id, "model/MLmodel", str(tmp_path))).read_text())["signature"]["inputs"])
    assert signature == [{"type": "binary", "name": "image", "required": True}]  # raw images: test_champion_serving.py
    png = Path(client.download_artifacts(run.info.run_id, "curves.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    x = np.zeros((3, 16, 16, 3), np.float32)
    probs = np.asarray(model.predict(x, verbose=0))
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def read_rows(path: Path) -> int:
    from longtail.splits import read_info

    return read_info(path).n
