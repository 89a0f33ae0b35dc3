"""Batch normalization as one fused TensorFlow op while a model trains; plain Keras layers in what is saved.

Keras 3 computes BatchNormalization from small ops (moments, then the affine), in float32 even under a
bfloat16 policy, casting in and out around every layer. On a CPU those ops, their gradients and the casts
cost more than the convolutions once AMX runs these in bfloat16 (docs/benchmarks.md "Training precision"). TensorFlow's
FusedBatchNormV3 does the same normalization as one oneDNN primitive (cuDNN on a GPU), forward and backward,
and takes bfloat16 or float16 activations with float32 statistics.

`with_fused_batch_norm` gives a copy of a model whose BatchNormalization layers compute that way, with the
same weights in the same order. Training trains the copy and then hands its weights back to the plain Keras
model (`model.set_weights(copy.get_weights())`); that model is what a model directory and MLflow keep, so
every saved model loads wherever Keras does, without longtail.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization computed by TensorFlow's fused op where it can be.

    The same weights, config and moving-average rule as Keras'. The fused op's batch variance, the one
    the moving variance averages, is Bessel-corrected (n / (n - 1), n = batch x height x width: a
    relative 1.6e-4 at the demo's smallest feature map). Other cases (a mask, renorm, a layer not
    normalizing the last axis of an NHWC tensor) take Keras' own path.
    """

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        affine = dict(
            scale=tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32),
            offset=tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32),
            epsilon=self.epsilon, data_format="NHWC")
        if training and self.trainable:
            empty = tf.zeros([0], tf.float32)
            outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, mean=empty, variance=empty, is_training=True, **affine)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), is_training=False, **affine)
        return tf.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs: Any, training: Any, mask: Any) -> bool:
        """Whether the fused op computes what Keras would: NHWC, last axis, no mask, no renorm, a known mode."""
        rank = len(inputs.shape)
        return (rank == 4 and self.axis % rank == 3 and mask is None and not self.renorm
                and isinstance(training, (bool, type(None)))
                and inputs.dtype in (tf.float32, tf.bfloat16, tf.float16))


def with_fused_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of `model` with FusedBatchNormalization for each plain BatchNormalization, weights copied.

    Build it before compiling, where the original was built (inside the same distribution strategy scope);
    `model` itself is left as it is, and `model.set_weights(copy.get_weights())` takes the copy's weights
    back. A model without plain BatchNormalization layers is returned unchanged.
    """
    bn = keras.layers.BatchNormalization
    if not any(type(layer) is bn for layer in _layers(model)):
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        cls = FusedBatchNormalization if type(layer) is bn else type(layer)
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of `model`, those of nested models included."""
    found = []
    for layer in model.layers:
        found.extend(_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found
