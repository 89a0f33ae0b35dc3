"""What a training is built from, by config: the target encoding, loss, accuracy, optimizer, precision and distribution strategy."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from longtail.config import LabelSmoothingConfig, OptimizerConfig, TrainConfig
from longtail.errors import ConfigError
from longtail.losses import build_loss, keras_loss
from longtail.precision import cpu_flags, resolve_jit_compile, resolve_precision

log = logging.getLogger(__name__)


def target_encoding(ls: LabelSmoothingConfig, mixing: bool = False) -> tuple[bool, float]:
    """(one_hot, smoothing applied to the targets) for a label smoothing config; mixup/cutmix need one-hot."""
    if ls.factor == 0:
        return mixing, 0.0
    return True, ls.factor if ls.mode == "labels" else 0.0


def make_loss(t: TrainConfig, class_counts: Sequence[int]) -> Any:
    """The keras loss of `train.loss` (longtail.losses) on logits, for targets as target_encoding makes them.

    Label smoothing mode loss smooths inside the loss, mode labels in the data; both modes give the
    same value on the same batch. Class weights arrive as sample weights from the data.
    """
    ls = t.label_smoothing
    loss_fn = build_loss(t.loss.name, class_counts, **t.loss.args)
    return keras_loss(loss_fn, len(class_counts), ls.factor if ls.mode == "loss" else 0.0)


def make_accuracy(ls: LabelSmoothingConfig, mixing: bool = False) -> Any:
    """Train accuracy named 'accuracy' whatever the target encoding (history.json reads it by name)."""
    import keras

    if not target_encoding(ls, mixing)[0]:
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    return keras.metrics.CategoricalAccuracy(name="accuracy")


def make_optimizer(opt: OptimizerConfig, learning_rate: float) -> Any:
    """SGD (momentum, nesterov) or Adam, with decoupled weight decay and weight averaging (EMA) when > 0.

    The average warms up (longtail.training.ema): its momentum is min(ema, (1 + t) / (10 + t)) at step t.
    """
    from longtail.training.ema import WarmupAdam, WarmupSGD

    wd = opt.weight_decay or None
    ema = {"use_ema": True, "ema_momentum": opt.ema} if opt.ema > 0 else {}
    if opt.name == "sgd":
        return WarmupSGD(learning_rate=learning_rate, momentum=opt.momentum,
                         nesterov=opt.nesterov, weight_decay=wd, **ema)
    if opt.name == "adam":
        return WarmupAdam(learning_rate=learning_rate, weight_decay=wd, **ema)
    raise ConfigError(f"config field train.optimizer.name must be sgd or adam, got {opt.name!r}")


# train.min_steps_per_epoch never makes a batch smaller than this (batch norm's statistics need a few images).
MIN_ADAPTIVE_BATCH = 16


def batch_for_steps(batch_size: int, n_rows: int, min_steps: int, replicas: int = 1) -> int:
    """The batch per replica a training uses: `batch_size`, or less where the split is too small for
    `min_steps` steps an epoch (train.min_steps_per_epoch): the largest power of two whose global batch
    gives that many, and at least MIN_ADAPTIVE_BATCH (or batch_size, if smaller)."""
    if min_steps <= 0 or n_rows // (batch_size * replicas) >= min_steps:
        return batch_size
    fits = max(1, n_rows // (min_steps * replicas))
    return max(min(batch_size, MIN_ADAPTIVE_BATCH), min(batch_size, 1 << (fits.bit_length() - 1)))


def _training_gpus(devices: Sequence[str] | None) -> list[Any]:
    """The GPUs a training runs on: none with explicit `devices` (logical CPUs in tests), else every visible one."""
    import tensorflow as tf

    return [] if devices else tf.config.list_physical_devices("GPU")


def training_precision(choice: str, devices: Sequence[str] | None = None) -> str:
    """The Keras dtype policy for train.precision on this machine (longtail.precision.resolve_precision)."""
    import tensorflow as tf

    gpus = _training_gpus(devices)
    capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability") or (0, 0) for g in gpus]
    return resolve_precision(choice, [tuple(c) for c in capabilities], cpu_flags())


def training_jit_compile(choice: bool | str, policy: str, replicas: int, devices: Sequence[str] | None = None) -> bool:
    """Whether this training compiles its steps with XLA (longtail.precision.resolve_jit_compile)."""
    return resolve_jit_compile(choice, policy, bool(_training_gpus(devices)), replicas, flags=cpu_flags())


def distribution_strategy(gpus: int, devices: Sequence[str] | None = None) -> Any:
    """MirroredStrategy over the visible GPUs (the first `gpus` of them when > 0).

    Args:
        gpus: train.gpus; 0 means every visible GPU.
        devices: explicit device names (e.g. two logical CPUs in tests); overrides `gpus`.

    Returns:
        A tf.distribute strategy; the default (single-device) one when there is no GPU.
    """
    import tensorflow as tf

    if devices:
        return tf.distribute.MirroredStrategy(list(devices))
    visible = [d.name for d in tf.config.list_logical_devices("GPU")]
    if gpus > len(visible):
        log.warning("train.gpus is %d but %d GPU(s) are visible: using %d", gpus, len(visible), len(visible))
    chosen = visible[:gpus] if gpus else visible
    if not chosen:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(chosen)

