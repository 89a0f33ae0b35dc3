"""Every registered loss: finite per-sample values with gradients; each method against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from longtail.errors import ConfigError
from longtail.losses import available_losses, build_loss, keras_loss

COUNTS = np.array([100, 40, 10, 1])
LOGITS = np.array([[2.0, 0.5, -1.0, 0.0],
                   [0.1, 1.5, 0.3, -0.7],
                   [-0.4, 0.2, 0.9, 0.4],
                   [1.0, -2.0, 0.0, 0.6]], dtype=np.float32)
LABELS = np.array([0, 1, 2, 3])


def ce_by_hand(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[label], row by row, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


def per_sample(name: str, targets: np.ndarray | None = None, **args: object) -> np.ndarray:
    fn = build_loss(name, COUNTS, **args)
    y = np.eye(4, dtype=np.float32)[LABELS] if targets is None else targets
    return np.asarray(fn(y, LOGITS), dtype=np.float64)


@pytest.mark.parametrize("name", available_losses())
def test_loss_is_finite_with_a_gradient_for_every_logit_row(name: str) -> None:
    import tensorflow as tf

    loss = keras_loss(build_loss(name, COUNTS), num_classes=4)
    logits = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        value = loss(LABELS, logits)
    grad = tape.gradient(value, logits).numpy()
    assert value.dtype == tf.float32 and np.isfinite(value.numpy())
    assert np.isfinite(grad).all() and np.all(np.abs(grad).sum(axis=1) > 0)
    # Sparse labels and one-hot targets are the same targets.
    assert float(loss(np.eye(4, dtype=np.float32)[LABELS], LOGITS)) == pytest.approx(float(value), rel=1e-6)


@pytest.mark.parametrize("name", available_losses())
def test_loss_of_float16_logits_is_computed_in_float32(name: str) -> None:
    import tensorflow as tf

    loss = keras_loss(build_loss(name, COUNTS), num_classes=4)
    half = loss(LABELS, tf.constant(LOGITS, tf.float16))
    assert half.dtype == tf.float32
    assert float(half) == pytest.approx(float(loss(LABELS, LOGITS)), rel=1e-3)


def test_cross_entropy_is_softmax_cross_entropy() -> None:
    np.testing.assert_allclose(per_sample("cross_entropy"), ce_by_hand(LOGITS, LABELS), rtol=1e-5)


@pytest.mark.parametrize("tau", [0.0, 1.0, 1.5])
def test_logit_adjusted_is_cross_entropy_on_logits_plus_tau_log_prior(tau: float) -> None:
    prior = COUNTS / COUNTS.sum()
    by_hand = ce_by_hand(LOGITS + tau * np.log(prior), LABELS)
    np.testing.assert_allclose(per_sample("logit_adjusted", tau=tau), by_hand, rtol=1e-5)
    if tau:
        assert not np.allclose(by_hand, ce_by_hand(LOGITS, LABELS), rtol=1e-3)


def test_ldam_subtracts_the_true_class_margin_from_the_true_logit_only() -> None:
    max_margin, scale = 0.5, 2.0
    # Margins proportional to n^(-1/4), the rarest class (n = 1) at max_margin: n = 100 -> 0.5 / 100^0.25.
    margins = np.array([0.5 / 100**0.25, 0.5 / 40**0.25, 0.5 / 10**0.25, 0.5])
    shifted = LOGITS.astype(np.float64).copy()
    for i, y in enumerate(LABELS):
        shifted[i, y] -= margins[y]
    by_hand = ce_by_hand(scale * shifted, LABELS)
    got = per_sample("ldam", max_margin=max_margin, scale=scale)
    np.testing.assert_allclose(got, by_hand, rtol=1e-5)
    # Subtracting the margin from every logit of a row would leave the softmax unchanged: not what LDAM does.
    assert not np.allclose(got, ce_by_hand(scale * LOGITS, LABELS), rtol=1e-3)


def test_focal_with_gamma_zero_is_cross_entropy_and_down_weights_easy_rows_otherwise() -> None:
    ce = ce_by_hand(LOGITS, LABELS)
    np.testing.assert_allclose(per_sample("focal", gamma=0.0), ce, rtol=1e-5)
    p_true = np.exp(-ce)
    np.testing.assert_allclose(per_sample("focal", gamma=2.0), (1 - p_true) ** 2 * ce, rtol=1e-5)


def test_label_smoothing_in_the_loss_smooths_the_targets() -> None:
    loss = keras_loss(build_loss("cross_entropy", COUNTS), num_classes=4, label_smoothing=0.2)
    smoothed = np.eye(4)[LABELS] * 0.8 + 0.05
    z = LOGITS.astype(np.float64)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert float(loss(LABELS, LOGITS)) == pytest.approx(float(np.mean(-(smoothed * log_p).sum(axis=1))), rel=1e-5)


def test_unknown_loss_and_arguments_name_the_config_field() -> None:
    with pytest.raises(ConfigError, match="train.loss.name: unknown loss 'dice'.*logit_adjusted"):
        build_loss("dice", COUNTS)
    with pytest.raises(ConfigError, match="train.loss.args.gama: .*takes: gamma"):
        build_loss("focal", COUNTS, gama=1.0)
    with pytest.raises(ConfigError, match="train.loss.args.tau must be >= 0, got -1"):
        build_loss("logit_adjusted", COUNTS, tau=-1)
    with pytest.raises(ConfigError, match="train.loss.args.scale must be > 0, got 'big'"):
        build_loss("ldam", COUNTS, scale="big")


def test_config_validates_the_loss_before_training() -> None:
    from longtail.config import config_from_dict

    cfg = config_from_dict({"train": {"loss": {"name": "focal", "args": {"gamma": 1.0}}}})
    assert cfg.train.loss.name == "focal" and cfg.train.loss.args == {"gamma": 1.0}
    assert config_from_dict({}).train.loss.name == "cross_entropy"  # today's loss by default
    with pytest.raises(ConfigError, match="train.loss.args.gamma must be >= 0"):
        config_from_dict({"train": {"loss": {"name": "focal", "args": {"gamma": -2}}}})
