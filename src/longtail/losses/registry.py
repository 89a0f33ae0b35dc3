"""The loss registry: per-sample losses on logits, looked up by the name `train.loss.name` gives.

A builder is `make_loss(class_counts, **args) -> LossFn`. It checks its arguments and does its numpy
work (priors, margins) without TensorFlow, so a config can be validated before anything is imported;
the returned LossFn maps (targets (B, C) float32, logits (B, C) float32) to a (B,) loss tensor.
Label smoothing and class weights are applied around it by `keras_loss`, the same for every loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from longtail.errors import ConfigError
from longtail.name_registry import Registry, check_maxima

LossFn = Callable[[Any, Any], Any]

_LOSSES = Registry("loss", "train.loss.name")


# Adding a loss is one file with one builder `make_loss(class_counts, **args) -> LossFn` decorated
# @register_loss("name", maxima={arg: largest value}); longtail.losses imports every module of its folder.
register_loss = _LOSSES.register
available_losses = _LOSSES.names  # every registered name, sorted


def build_loss(name: str, class_counts: Sequence[int], **args: Any) -> LossFn:
    """Build the registered loss `name` for a train split with these per-class counts.

    Raises:
        ConfigError: an unknown name (listing the known ones), an argument the builder lacks, a value
            over the maximum its registration declares, or one the builder refuses (each naming its
            config field).
    """
    builder = _LOSSES.get(name)
    known = list(inspect.signature(builder).parameters)[1:]
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ConfigError(
            f"config field train.loss.args.{unknown[0]}: loss {name!r} has no such argument; "
            f"it takes: {', '.join(known) or 'no arguments'}"
        )
    check_maxima(args, _LOSSES.maxima[name], "train.loss.args")
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 1 or np.any(counts < 0):
        raise ValueError(f"class_counts must be a list of counts >= 0, got {list(class_counts)}")
    return builder(np.maximum(counts, 1.0), **args)


def check_loss(name: str, args: dict[str, Any]) -> None:
    """Validate `train.loss` (name and arguments) without building anything for real data."""
    build_loss(name, [1, 1], **args)


def number_arg(value: Any, field: str, rule: str, ok: Callable[[float], bool]) -> float:
    """`value` as a float when it is a number satisfying `ok`; else a ConfigError naming `train.loss.args.<field>`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or not ok(value):
        raise ConfigError(f"config field train.loss.args.{field} must be {rule}, got {value!r}")
    return float(value)


def log_prior(class_counts: np.ndarray) -> np.ndarray:
    """log(n_c / N), the train split's class prior in log space (float32)."""
    return np.log(class_counts / class_counts.sum()).astype(np.float32)


def cross_entropy_of(targets: Any, logits: Any) -> Any:
    """-sum_c targets_c * log softmax(logits)_c per row: CE on logits, for one-hot or soft targets."""
    import tensorflow as tf

    return -tf.reduce_sum(targets * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def keras_loss(loss_fn: LossFn, num_classes: int, label_smoothing: float = 0.0) -> Any:
    """A keras Loss around a registered LossFn, computed in float32 (mixed-precision safe).

    Targets may be sparse class indices or one-hot/soft rows (label smoothing in the labels,
    mixup/cutmix); `label_smoothing` > 0 smooths them inside the loss (mode `loss`). Class weights
    arrive as Keras sample weights, so the batch reduction is today's sum(w * loss) / batch size.
    """
    import keras
    import tensorflow as tf

    class LogitLoss(keras.losses.Loss):
        def __init__(self) -> None:
            super().__init__(name="logit_loss", dtype="float32")

        def call(self, y_true: Any, y_pred: Any) -> Any:
            logits = tf.cast(y_pred, tf.float32)
            if y_true.shape.rank == 2 and y_true.shape[-1] == num_classes:
                targets = tf.cast(y_true, tf.float32)
            else:
                labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
                targets = tf.one_hot(labels, num_classes, dtype=tf.float32)
            if label_smoothing:
                targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
            return loss_fn(targets, logits)

    return LogitLoss()
