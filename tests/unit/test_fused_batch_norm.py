"""Fused batch norm computes what Keras' BatchNormalization computes, and what training saves is plain Keras."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_models import TINY, digits_batch

from longtail.models import available_models, build_model
from longtail.models.fused_batch_norm import FusedBatchNormalization, with_fused_batch_norm


def _layer(cls: type, shape: tuple[int, ...]) -> keras.layers.BatchNormalization:
    layer = cls(momentum=0.9, epsilon=2e-5)
    layer.build(shape)
    channels = shape[-1]
    layer.gamma.assign(np.linspace(0.5, 1.5, channels))
    layer.beta.assign(np.linspace(-1.0, 1.0, channels))
    return layer


def _step(cls: type, x: np.ndarray, w: np.ndarray, training: bool):
    """Outputs, the gradients of sum(y * w) for x, gamma and beta, and the moving statistics after."""
    layer = _layer(cls, x.shape)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * w)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return (y.numpy(), *[g.numpy() for g in grads], layer.moving_mean.numpy(), layer.moving_variance.numpy())


@pytest.mark.parametrize("training", [True, False])
def test_fused_layer_matches_keras(training: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (16, 5, 5, 8)).astype("float32")
    w = rng.normal(0.0, 1.0, x.shape).astype("float32")
    keras_out = _step(keras.layers.BatchNormalization, x, w, training)
    fused_out = _step(FusedBatchNormalization, x, w, training)
    names = ("outputs", "grad x", "grad gamma", "grad beta", "moving mean")
    for name, a, b in zip(names, keras_out, fused_out, strict=False):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=name)
    # The moving variance averages the Bessel-corrected batch variance: n / (n - 1) of Keras' update.
    n = 16 * 5 * 5
    keras_var, fused_var = keras_out[-1], fused_out[-1]
    if training:
        np.testing.assert_allclose(fused_var - 0.9, (keras_var - 0.9) * n / (n - 1), rtol=1e-4)
        assert not np.allclose(keras_var, 1.0)  # the statistics did move
    else:
        np.testing.assert_array_equal(fused_var, keras_var)


def test_fused_layer_under_bfloat16_keeps_bfloat16_activations() -> None:
    x = np.random.default_rng(1).normal(0.5, 2.0, (8, 4, 4, 6)).astype("float32")
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == "float32"
    normalized = y.numpy().astype("float32")
    np.testing.assert_allclose(normalized.mean(axis=(0, 1, 2)), 0.0, atol=0.02)
    np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1.0, atol=0.02)


def test_what_the_op_cannot_fuse_takes_keras_path() -> None:
    x = np.random.default_rng(2).normal(1.0, 2.0, (32, 6)).astype("float32")  # rank 2: after a Dense layer
    keras_y = _layer(keras.layers.BatchNormalization, x.shape)(x, training=True).numpy()
    fused_layer = _layer(FusedBatchNormalization, x.shape)
    np.testing.assert_array_equal(fused_layer(x, training=True).numpy(), keras_y)
    channels_first = FusedBatchNormalization(axis=1)
    assert not channels_first._fusable(tf.zeros((2, 3, 4, 4)), True, None)


@pytest.mark.parametrize("name", available_models())
def test_every_model_trains_fused_and_saves_plain_keras(name: str, tmp_path) -> None:
    shape, args = TINY[name]
    plain = build_model(name, shape, 10, **args)
    fused = with_fused_batch_norm(plain)
    kinds = {type(layer) for layer in fused.layers}
    assert FusedBatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    assert FusedBatchNormalization not in {type(layer) for layer in plain.layers}  # the original is untouched
    x, y = digits_batch(shape)
    before = plain(x, training=False).numpy()
    np.testing.assert_allclose(fused(x, training=False).numpy(), before, atol=1e-4)
    fused.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fused.fit(x, y, epochs=2, verbose=0)
    plain.set_weights(fused.get_weights())
    after = plain(x, training=False).numpy()
    assert not np.allclose(after, before, atol=1e-3)  # the training moved the weights and the statistics
    np.testing.assert_allclose(after, fused(x, training=False).numpy(), atol=1e-4)
    # The saved model loads in a process that never imports longtail.
    path = tmp_path / "model.keras"
    plain.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", after)
    code = ("import sys, numpy as np, keras; m = keras.models.load_model(sys.argv[1], compile=False); "
            "np.testing.assert_allclose(m(np.load(sys.argv[2])).numpy(), np.load(sys.argv[3]), atol=1e-5); "
            "assert 'longtail' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_model_without_batch_norm_is_returned_as_is() -> None:
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    assert with_fused_batch_norm(model) is model
