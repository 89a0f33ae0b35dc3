"""evaluate(): sklearn's numbers through the model's preprocessing, the gate, the overfitting warning, readable plots."""

from __future__ import annotations

import json
import logging
import shutil

import keras
import numpy as np
import pytest
from digits_models import CLASS_NAMES, INGEST, make_digits, train_model_dir
from matplotlib.image import imread
from sklearn.metrics import classification_report, f1_score

from longtail.cli import main
from longtail.errors import ConfigError, DataError
from longtail.evaluation import (
    MARKDOWN_MAX_ROWS,
    ClassResult,
    evaluate,
    gate,
    overfitting_warning,
    plot_confusion_matrix,
    plot_f1_vs_frequency,
    render_markdown,
)
from longtail.model_dir import MODEL_FILE, ModelDir
from longtail.scoring import REPORT_DIGITS, classification_scores
from longtail.splits import read_arrays, write_split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    data = make_digits(root / "data")
    model_dir = train_model_dir(data, root / "model", scale="mean_subtraction")
    return data, model_dir


@pytest.fixture(scope="module")
def evaluated(world, tmp_path_factory):
    data, model_dir = world
    return evaluate(model_dir, data.val_h5, tmp_path_factory.mktemp("eval"))


@pytest.mark.slow
def test_numbers_are_sklearn_on_the_models_own_predictions(world, evaluated):
    data, model_dir = world
    images, labels, _ = read_arrays(data.val_h5)
    prep = ModelDir(model_dir).preprocessing()
    pred = ModelDir(model_dir).load_model().predict(prep.to_float(images), verbose=0).argmax(axis=1)
    r = evaluated
    # The default target prior is balanced: each val image weighs 1/(its class's val count).
    weight = 1.0 / np.bincount(labels)[labels]
    assert r.target_prior == "balanced" and len(set(np.bincount(labels))) > 1
    assert r.macro_f1 == pytest.approx(f1_score(labels, pred, average="macro", sample_weight=weight))
    assert r.macro_f1_plain == pytest.approx(f1_score(labels, pred, average="macro"))
    assert r.weighted_f1 == pytest.approx(f1_score(labels, pred, average="weighted", sample_weight=weight))
    assert r.accuracy == pytest.approx(np.mean([np.mean(pred[labels == c] == c) for c in range(10)]))
    assert r.macro_f1 > 0.85
    assert r.report_text == classification_report(labels, pred, target_names=CLASS_NAMES, digits=REPORT_DIGITS,
                                                  sample_weight=weight)
    assert [c.name for c in r.per_class] == CLASS_NAMES
    assert sum(c.support for c in r.per_class) == r.n == len(labels)


@pytest.mark.slow
def test_outputs_are_written_and_consistent(evaluated):
    r = evaluated
    assert sorted(p.name for p in r.paths.values()) == [
        "confusion_matrix.png", "metrics.json", "per_class_f1.png", "report.md", "report.txt",
    ]
    for key in ("confusion_png", "per_class_png"):
        assert r.paths[key].read_bytes()[:8] == PNG_MAGIC
    saved = json.loads(r.paths["metrics_json"].read_text())
    assert saved["macro_f1"] == pytest.approx(r.macro_f1) and saved["passed"] is True
    assert saved["metrics"] == r.metrics and r.metrics["macro_f1"] == pytest.approx(r.macro_f1)
    assert np.array(saved["confusion_matrix"]).sum() == r.n
    assert r.paths["report_txt"].read_text().rstrip() == r.report_text.rstrip()
    md = r.paths["report_md"].read_text()
    assert f"**{r.macro_f1:.4f}**" in md and "**Gate: PASSED**" in md and "| class | val images |" in md
    assert r.confusion["categories"] == CLASS_NAMES
    # Without train counts in the model directory the stratified val support stands in.
    assert [c.train_count for c in r.per_class] == [c.support for c in r.per_class]
    assert saved["train_counts_source"].startswith("val images")
    assert r.mlflow_run_id is None


@pytest.mark.slow
def test_train_counts_from_preprocessing_extra(world, tmp_path):
    data, model_dir = world
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    prep = ModelDir(copy).preprocessing()
    counts = {n: int(c) for n, c in zip(CLASS_NAMES, np.bincount(data.train_labels), strict=True)}
    prep.extra = {"class_counts": counts}
    ModelDir(copy).save_preprocessing(prep)
    r = evaluate(copy, data.val_h5, tmp_path / "eval")
    assert [c.train_count for c in r.per_class] == list(counts.values())


@pytest.mark.slow
def test_train_counts_from_a_weights_json_and_mismatched_names_ignored(world, tmp_path):
    data, model_dir = world
    counts = np.bincount(data.train_labels).tolist()
    weights = tmp_path / "weights.json"  # the format `longtail weights` writes
    weights.write_text(json.dumps({"scheme": "none", "class_names": CLASS_NAMES, "counts": counts, "weights": [1.0] * 10}))
    r = evaluate(model_dir, data.val_h5, tmp_path / "eval", weights_json=weights)
    assert [c.train_count for c in r.per_class] == counts
    assert json.loads(r.paths["metrics_json"].read_text())["train_counts_source"] == "train images per class (weights.json)"
    assert "| class | train images |" in r.paths["report_md"].read_text()

    weights.write_text(json.dumps({"class_names": CLASS_NAMES[::-1], "counts": counts}))
    r = evaluate(model_dir, data.val_h5, tmp_path / "eval2", weights_json=weights)
    assert [c.train_count for c in r.per_class] == [c.support for c in r.per_class]


@pytest.mark.slow
def test_gate_fails_with_reason_and_passes_at_threshold(world, tmp_path):
    data, model_dir = world
    r = evaluate(model_dir, data.val_h5, tmp_path / "eval", min_macro_f1=0.999)
    assert r.passed is False
    assert r.reason.startswith(f"macro-F1 {r.macro_f1:.4f} < evaluate.min_macro_f1 0.9990")
    assert r.metrics["gate_passed"] == 0.0
    assert "**Gate: FAILED**" in r.paths["report_md"].read_text()
    assert gate(0.8, 0.8) == (True, "macro-F1 0.8000 >= evaluate.min_macro_f1 0.8000")
    assert gate(0.5, 0.0)[0] is True


@pytest.mark.slow
def test_bad_gate_is_refused_before_predicting(world, tmp_path):
    data, model_dir = world
    with pytest.raises(ConfigError, match=r"evaluate.min_macro_f1 must be in \[0, 1\], got 1.5"):
        evaluate(model_dir, data.val_h5, tmp_path / "eval", min_macro_f1=1.5)
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_overfitting_warning_like_exp1(world, tmp_path):
    data, model_dir = world
    assert overfitting_warning({"accuracy": [0.7, 1.0]}, 0.83) is not None
    assert overfitting_warning({"accuracy": [0.7, 1.0]}, 0.95) is None  # close enough to train
    assert overfitting_warning({"accuracy": [0.7, 0.9]}, 0.5) is None  # train not near 1
    assert overfitting_warning({}, 0.1) is None

    # A model dir whose history says train accuracy hit 1 but whose weights are untrained.
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    fresh = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    fresh.save(copy / MODEL_FILE)
    (copy / "history.json").write_text(json.dumps({"accuracy": [0.9, 1.0], "val_macro_f1": [0.2, 0.2]}))
    r = evaluate(copy, data.val_h5, tmp_path / "eval")
    assert any(w.startswith("possible overfitting: final train accuracy 1.000") for w in r.warnings)
    assert "possible overfitting" in r.paths["report_md"].read_text()
    assert not any("overfitting" in w for w in evaluate(model_dir, data.val_h5, tmp_path / "e2").warnings)


@pytest.mark.slow
def test_unlabelled_split_is_refused(world, tmp_path):
    data, model_dir = world
    with pytest.raises(DataError, match="test.h5 has no labels: .*use `longtail predict`"):
        evaluate(model_dir, data.test_h5, tmp_path / "eval")


@pytest.mark.slow
def test_split_with_other_class_order_is_refused(world, tmp_path):
    data, model_dir = world
    images, labels, ids = read_arrays(data.val_h5)
    other = write_split(
        tmp_path / "val.h5", images, ids, labels=labels, class_names=CLASS_NAMES[::-1], image_size=8,
        preprocessing=INGEST, source_fingerprint="x",
    )
    with pytest.raises(DataError, match="same classes in a different order"):
        evaluate(model_dir, other, tmp_path / "eval")


@pytest.mark.slow
def test_split_ingested_with_clahe_is_refused(world, tmp_path):
    data, model_dir = world
    images, labels, ids = read_arrays(data.val_h5)
    other = write_split(
        tmp_path / "val.h5", images, ids, labels=labels, class_names=CLASS_NAMES, image_size=8,
        preprocessing={**INGEST, "clahe": True}, source_fingerprint="x",
    )
    with pytest.raises(DataError, match=r"clahe: model has False, split has True"):
        evaluate(model_dir, other, tmp_path / "eval")


@pytest.mark.slow
def test_cli_prints_table_and_gate_and_exits_0_when_gate_fails(world, tmp_path, capsys):
    data, model_dir = world
    code = main(["evaluate", str(model_dir), str(data.val_h5), str(tmp_path / "eval"), "--min-macro-f1", "0.999"])
    out = capsys.readouterr().out
    assert code == 0
    assert "macro avg" in out and "GATE FAILED: macro-F1" in out
    assert main(["evaluate", str(model_dir), str(tmp_path / "nope.h5"), str(tmp_path / "e")]) == 2
    assert "HDF5 split not found" in capsys.readouterr().err


def synthetic(n: int, seed: int = 0):
    """Long-tailed counts and predictions whose accuracy grows with class frequency."""
    rng = np.random.default_rng(seed)
    counts = np.maximum(2, 1000 * 0.01 ** (np.arange(n) / (n - 1))).astype(int)
    names = [f"species_{i:03d}" for i in range(n)]
    y = np.repeat(np.arange(n), 20)
    acc = 0.4 + 0.55 * np.log(counts) / np.log(counts.max())
    pred = np.where(rng.random(len(y)) < acc[y], y, np.clip(y + rng.integers(-3, 4, len(y)), 0, n - 1))
    s = classification_scores(y, pred, names)
    per_class = [ClassResult(**vars(c), train_count=int(counts[c.index])) for c in s.per_class]
    return s, names, per_class


@pytest.mark.parametrize("n", [10, 200])
def test_plots_are_readable_pngs_at_10_and_200_classes(tmp_path, n):
    s, names, per_class = synthetic(n)
    cm_png = plot_confusion_matrix(s.confusion, names, tmp_path / "cm.png", title="synthetic")
    f1_png = plot_f1_vs_frequency(per_class, tmp_path / "f1.png", macro_f1=s.macro_f1)
    for png in (cm_png, f1_png):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000
        pixels = imread(png)
        assert pixels.shape[0] >= 500 and pixels[..., :3].std() > 0.05  # drawn, not blank
    # 200 classes are cut to the 30 most confused, so the figure stays a readable size.
    assert imread(cm_png).shape[0] < 2000


def test_markdown_caps_the_per_class_table(tmp_path):
    s, names, per_class = synthetic(200)
    md = render_markdown(
        title="t", scores=s, per_class=per_class, passed=True, reason="passed", warnings=["w1"], confusions=[],
    )
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| species_")]
    assert len(table_rows) == MARKDOWN_MAX_ROWS
    assert f"({MARKDOWN_MAX_ROWS} worst of 200; report.txt has all)" in md
    assert "- w1" in md and md.count("species_") > 200  # the full report is included once
    assert "| test-time augmentation | none |" in md
    shifted = render_markdown(title="t", scores=s, per_class=per_class, passed=True, reason="passed", warnings=[],
                              confusions=[], tta=True, tta_shift=0.07)
    assert "| test-time augmentation | flip + 7% shift TTA |" in shifted


@pytest.mark.slow
def test_no_mlflow_run_is_said_in_a_log_line(world, tmp_path, caplog):
    data, model_dir = world
    with caplog.at_level(logging.INFO, logger="longtail"):
        evaluate(model_dir, data.val_h5, tmp_path / "eval")
    assert "no mlflow_run.json: not logging to MLflow" in caplog.text
