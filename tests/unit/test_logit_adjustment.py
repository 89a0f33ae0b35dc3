"""Post-hoc logit adjustment: the tuned tau maximises val macro-F1; the stored tau round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from longtail.errors import DataError
from longtail.logit_adjustment import (
    TAU_GRID,
    LogitAdjustment,
    choose_adjustment,
    plot_posthoc_gains,
    probability_model,
)
from longtail.model_dir import ModelDir

# Train prior 90:10, so tau * (log 0.9 - log 0.1) = tau * 2.197 is taken off class 0's logit lead d.
COUNTS = [90, 10]
# Val rows as (label, d = logit_0 - logit_1). Class 0 is predicted while d > 2.197 * tau:
#   class 1 at d = 1.5 becomes right from tau > 0.68; class 0 at d = 2.0 stays right up to tau < 0.91,
#   class 0 at d = 3.0 up to tau < 1.37. Only tau = 0.75 on the grid gets every row right.
ROWS = [(0, 3.0), (0, 2.0), (1, 1.5), (1, -1.0)]


def val_probs(copies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """ROWS as val labels and probabilities, each row `copies` times (the same F1 at every tau)."""
    labels = np.array([y for y, _ in ROWS] * copies)
    logits = np.array([[d, 0.0] for _, d in ROWS] * copies)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


def test_tuned_tau_maximises_val_macro_f1() -> None:
    probs, labels = val_probs(copies=25)  # 100 rows: every bootstrap draw holds rows only tau 0.75 gets right
    choice = choose_adjustment("tune", probs, labels, COUNTS)
    assert choice.tuned and choice.adjustment.tau == choice.best_tau == 0.75 and not choice.within_noise()
    assert choice.val_macro_f1_after == 1.0
    # By hand: tau 0 predicts class 0 for the first three rows.
    assert choice.val_macro_f1_before == pytest.approx(f1_score(labels, [0, 0, 0, 1] * 25, average="macro"))
    for tau in TAU_GRID:
        if tau != 0.75:
            pred = LogitAdjustment.from_counts(tau, COUNTS).apply(probs).argmax(axis=1)
            assert f1_score(labels, pred, average="macro") < 1.0, tau
    # The whole curve is kept, each point the figure of that tau's predictions.
    assert list(choice.by_tau) == list(TAU_GRID)
    for tau, f1 in choice.by_tau.items():
        pred = LogitAdjustment.from_counts(tau, COUNTS).apply(probs).argmax(axis=1)
        assert f1 == pytest.approx(f1_score(labels, pred, average="macro")), tau
    assert choice.curve().startswith(f"tau 0: {choice.val_macro_f1_before:.4f}, 0.25: ")
    assert "0.75: 1.0000" in choice.curve()
    # Every tau's gain over tau 0, on the same bootstrap draws; the chosen one's is the before/after step.
    assert list(choice.gains) == list(TAU_GRID) and choice.gains[0.0].gain == 0.0
    assert choice.gain is choice.gains[0.75]
    assert choice.gain.gain == pytest.approx(choice.val_macro_f1_after - choice.val_macro_f1_before)
    assert 0 < choice.gain.low <= choice.gain.gain <= choice.gain.high
    # On the four rows alone, half the draws of class 1 miss the row tau 0.75 fixes: a lead within noise.
    few = choose_adjustment("tune", *val_probs(), COUNTS)
    assert few.best_tau == 0.75 and few.gains[0.75].low == 0.0
    assert few.adjustment.tau == 0.0 and few.within_noise() and few.val_macro_f1_after == few.val_macro_f1_before


def test_a_tau_that_wins_by_one_val_image_is_within_noise(tmp_path) -> None:
    """100 val rows per class; tau 0.25 turns one class-1 row right and nothing else."""
    labels = np.repeat([0, 1], 100)
    d = np.where(labels == 0, 3.0, -3.0)
    d[100] = 0.3  # a class-1 row tau 0 gets wrong; tau 0.25 moves the line to 0.55 and gets it right
    probs = np.stack([1 / (1 + np.exp(-d)), 1 / (1 + np.exp(d))], axis=1)
    choice = choose_adjustment("tune", probs, labels, COUNTS)
    assert choice.best_tau == 0.25 and choice.gain is not None and choice.gain.gain > 0
    assert choice.adjustment.tau == 0.0 and choice.within_noise()  # tuning keeps the model's own decision
    fixed = choose_adjustment(0.25, probs, labels, COUNTS)
    assert fixed.adjustment.tau == 0.25 and not fixed.within_noise()  # a tau set by hand is kept as set
    plot = plot_posthoc_gains(choice, tmp_path / "posthoc_tau.png", title="two classes")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fixed_tau_is_kept_and_scored() -> None:
    probs, labels = val_probs()
    choice = choose_adjustment(1.25, probs, labels, COUNTS)
    assert not choice.tuned and choice.adjustment.tau == 1.25
    assert choice.val_macro_f1_after == pytest.approx(f1_score(labels, [0, 1, 1, 1], average="macro"))
    assert sorted(choice.by_tau) == [0.0, 1.25]  # a fixed tau is scored against no adjustment only


def test_apply_is_softmax_of_logits_minus_tau_log_prior() -> None:
    logits = np.array([[1.0, 0.2, -0.5]])
    probs = np.exp(logits) / np.exp(logits).sum()
    adj = LogitAdjustment.from_counts(1.5, [50, 30, 20])
    z = logits - 1.5 * np.log(np.array([0.5, 0.3, 0.2]))
    np.testing.assert_allclose(adj.apply(probs), np.exp(z) / np.exp(z).sum(), rtol=1e-5)


def test_saved_adjustment_round_trips_and_a_broken_file_is_refused(tmp_path) -> None:
    adj = LogitAdjustment.from_counts(0.5, [3, 1])
    ModelDir(tmp_path).save_adjustment(adj)
    assert ModelDir(tmp_path).adjustment() == adj
    assert ModelDir(tmp_path / "nothing").adjustment() is None
    (tmp_path / "logit_adjustment.json").write_text('{"tau": 1}')
    with pytest.raises(DataError, match="logit_adjustment.json is not a valid logit adjustment"):
        ModelDir(tmp_path).adjustment()


def test_probability_model_gives_what_predict_computes() -> None:
    import keras

    from longtail.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", (8, 8, 3), 3, width=2)
    x = np.random.default_rng(0).random((5, 8, 8, 3)).astype(np.float32)
    logits = np.asarray(model(x), dtype=np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    adj = LogitAdjustment.from_counts(1.0, [80, 15, 5])
    np.testing.assert_allclose(probability_model(model, None)(x), probs, rtol=1e-5)
    np.testing.assert_allclose(probability_model(model, adj)(x), adj.apply(probs), rtol=1e-4, atol=1e-6)
