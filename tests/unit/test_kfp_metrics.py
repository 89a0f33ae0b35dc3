"""KFP-facing structures: flat float metrics and a confusion matrix capped for KFP's metadata store."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from longtail.kfp_metrics import (
    KFP_MAX_CLASSES,
    KFP_METADATA_BUDGET_BYTES,
    OTHER,
    kfp_confusion_matrix,
    kfp_scalar_metrics,
)
from longtail.scoring import classification_scores


def long_tail_confusion(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    support = np.maximum(2, (500 * 0.01 ** (np.arange(n) / max(n - 1, 1)))).astype(int)
    y = np.repeat(np.arange(n), support)
    pred = np.where(rng.random(len(y)) < 0.8, y, rng.integers(0, n, len(y)))
    return classification_scores(y, pred, [f"c{i}" for i in range(n)]).confusion


def test_small_matrix_is_passed_whole():
    cm = long_tail_confusion(10)
    names = [f"c{i}" for i in range(10)]
    out = kfp_confusion_matrix(cm, names)
    assert out["categories"] == names
    assert out["matrix"] == cm.tolist()
    assert out["truncated"] is False and out["n_classes"] == 10


def test_200_classes_keep_the_most_confused_and_fold_the_rest():
    cm = long_tail_confusion(200)
    names = [f"c{i}" for i in range(200)]
    out = kfp_confusion_matrix(cm, names)
    cats, m = out["categories"], np.array(out["matrix"])
    assert len(cats) == KFP_MAX_CLASSES and cats[-1] == OTHER and out["truncated"]
    assert m.shape == (KFP_MAX_CLASSES, KFP_MAX_CLASSES)
    assert m.sum() == cm.sum()  # every image still counted
    kept = [names.index(c) for c in cats[:-1]]
    np.testing.assert_array_equal(m[:-1].sum(axis=1), cm[kept].sum(axis=1))  # rows = class supports
    errors = (cm.sum(1) - np.diag(cm)) + (cm.sum(0) - np.diag(cm))
    assert min(errors[kept]) >= max(np.delete(errors, kept))
    assert len(json.dumps(out)) < KFP_METADATA_BUDGET_BYTES


def test_long_names_shrink_the_matrix_under_the_byte_budget():
    cm = long_tail_confusion(60)
    names = [f"{i:03d}" + "x" * 2000 for i in range(60)]
    out = kfp_confusion_matrix(cm, names, budget_bytes=20_000)
    assert len(json.dumps(out)) <= 20_000
    assert 1 < len(out["categories"]) < KFP_MAX_CLASSES


def test_accepted_by_kfp_classification_metrics():
    from kfp import dsl
    out = kfp_confusion_matrix(long_tail_confusion(200), [f"c{i}" for i in range(200)])
    artifact = dsl.ClassificationMetrics(name="confusion")
    artifact.log_confusion_matrix(out["categories"], out["matrix"])
    assert artifact.metadata["confusionMatrix"]["annotationSpecs"][-1]["displayName"] == OTHER
    assert len(json.dumps(artifact.metadata)) < KFP_METADATA_BUDGET_BYTES


def test_scalar_metrics_are_floats_for_kfp_metrics():
    s = classification_scores([0, 0, 1, 1, 2], [0, 1, 1, 1, 1], ["a", "b", "c"])
    m = kfp_scalar_metrics(s, min_macro_f1=0.5, passed=False)
    assert all(type(v) is float for v in m.values())
    assert m["macro_f1"] == pytest.approx(s.macro_f1)
    assert m["gate_passed"] == 0.0 and m["min_macro_f1"] == 0.5
    assert m["classes_with_zero_f1"] == 1.0 and m["worst_class_f1"] == 0.0
    assert m["n_images"] == 5.0


def test_library_and_cli_modules_import_neither_kfp_nor_tensorflow():
    code = (
        "import sys, longtail.kfp_metrics, longtail.evaluation, longtail.prediction, longtail.scoring;"
        "import longtail.commands.evaluate, longtail.commands.predict, longtail.commands.score, longtail.commands.lb;"
        "bad = [m for m in sys.modules if m == 'kfp' or m.startswith('kfp.') or m == 'tensorflow'];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
