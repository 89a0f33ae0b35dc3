"""Class weights against hand-computed values, and the JSON and line `longtail weights` writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longtail.class_weights import class_weights, write_weights
from longtail.cli import main
from longtail.config import WeightsConfig, config_from_dict
from longtail.errors import ConfigError, DataError
from longtail.splits import write_split


def test_none_is_all_ones():
    assert class_weights([5, 50, 500], "none", beta=0.999) == [1.0, 1.0, 1.0]


def test_inverse_frequency_by_hand():
    # max / count: the largest class weighs exactly 1.0.
    assert class_weights([100, 50, 10, 100], "inverse-frequency", beta=0.999) == [1.0, 2.0, 10.0, 1.0]
    # The seed log's EXP2 line: largest class 983 images, smallest 19 -> 51.73684210526316.
    assert max(class_weights([983, 400, 19], "inverse-frequency", beta=0.999)) == 51.73684210526316


def test_effective_number_by_hand():
    # beta 0.5, counts 1 and 2: raw (1-b)/(1-b^n) = 0.5/0.5 = 1 and 0.5/0.75 = 2/3; their sum 5/3;
    # normalised to sum to 2 classes: 1 * 2 / (5/3) = 1.2 and (2/3) * 2 / (5/3) = 0.8.
    assert class_weights([1, 2], "effective-number", beta=0.5) == pytest.approx([1.2, 0.8])
    # beta 0.9, counts 10 and 1: raw 0.1/(1-0.9^10) = 0.1/0.6513215599 = 0.15353399 and 1.0;
    # sum 1.15353399 -> x2 -> 0.26619767 and 1.73380233.
    assert class_weights([10, 1], "effective-number", beta=0.9) == pytest.approx([0.26619767, 1.73380233])


def test_effective_number_sums_to_classes_and_tends_to_its_limits():
    counts = [6000, 3597, 2156, 1293, 775, 465, 278, 167, 100, 60]
    w = class_weights(counts, "effective-number", beta=0.999)
    assert sum(w) == pytest.approx(len(counts))
    assert w == sorted(w)  # rarer classes weigh more
    # beta -> 0: every class counts as one sample -> all weights 1; beta -> 1: inverse frequency, rescaled.
    assert class_weights(counts, "effective-number", beta=1e-9) == pytest.approx([1.0] * 10)
    inv = np.array(class_weights(counts, "inverse-frequency", beta=0.999))
    near_one = np.array(class_weights(counts, "effective-number", beta=1 - 1e-9))
    assert near_one == pytest.approx(inv * len(counts) / inv.sum(), rel=1e-4)


def test_bad_input_is_a_clear_error():
    with pytest.raises(DataError, match="unknown class-weight scheme 'balanced'; choose one of none, inverse"):
        class_weights([1, 2], "balanced", beta=0.999)
    # One range for beta, the config's: weights.beta (0 weighs every class as one sample, 1 divides by zero).
    for beta in (1.0, 0.0):
        with pytest.raises(DataError, match=f"weights.beta must be > 0 and < 1, got {beta}"):
            class_weights([1, 2], "effective-number", beta=beta)
        with pytest.raises(ConfigError, match=f"config field weights.beta must be > 0 and < 1, got {beta}"):
            config_from_dict({"weights": {"beta": beta}})
    with pytest.raises(DataError, match="class index 1 has no training samples"):
        class_weights([3, 0], "inverse-frequency", beta=0.999)


@pytest.fixture
def train_h5(tmp_path):
    labels = np.repeat(np.arange(3), [983, 400, 19]).astype(np.int32)
    images = np.zeros((len(labels), 4, 4, 3), np.uint8)
    return write_split(tmp_path / "train.h5", images, [str(i) for i in range(len(labels))], labels=labels,
                       class_names=["cat", "dog", "eel"], image_size=4, preprocessing={"image_size": 4},
                       source_fingerprint="x", mean_rgb=[0.0, 0.0, 0.0])


def test_write_weights_json_and_the_log_line(train_h5, tmp_path, capsys):
    out = tmp_path / "w" / "weights.json"
    result = write_weights(train_h5, out, "inverse-frequency", beta=0.999)
    assert capsys.readouterr().out == "class weights (min, max) = (1.0, 51.73684210526316)\n"
    assert json.loads(out.read_text()) == result
    assert result == {
        "scheme": "inverse-frequency", "beta": 0.999, "class_names": ["cat", "dog", "eel"],
        "counts": [983, 400, 19], "weights": [1.0, 983 / 400, 983 / 19], "min": 1.0, "max": 983 / 19,
    }


def test_cli_weights(train_h5, tmp_path, capsys):
    out = tmp_path / "w.json"
    assert main(["weights", str(train_h5), str(out), "--scheme", "effective-number", "--beta", "0.99"]) == 0
    data = json.loads(out.read_text())
    assert data["scheme"] == "effective-number" and data["beta"] == 0.99
    assert data["weights"] == pytest.approx(class_weights([983, 400, 19], "effective-number", 0.99))
    assert capsys.readouterr().out.startswith("class weights (min, max) = (")
    # A test split has no labels: a clear error, exit status 2, no traceback.
    test_h5 = write_split(tmp_path / "test.h5", np.zeros((2, 4, 4, 3), np.uint8), ["a", "b"], class_names=[],
                          image_size=4, preprocessing={}, source_fingerprint="x")
    assert main(["weights", str(test_h5), str(tmp_path / "x.json"), "--scheme", "none"]) == 2
    assert "has no labels" in capsys.readouterr().err


def test_cli_beta_defaults_to_the_config_declaration(train_h5, tmp_path):
    out = tmp_path / "w.json"
    assert main(["weights", str(train_h5), str(out), "--scheme", "effective-number"]) == 0
    assert json.loads(out.read_text())["beta"] == WeightsConfig.beta
