"""Learning rate per epoch: the step tables and 'LRDecayScheduler' (poly, power 2.5) of docs/seed-log.md."""

from __future__ import annotations

import math
from typing import Any

from longtail.config import LRConfig


def learning_rate(lr: LRConfig, epoch: int, epochs: int) -> float:
    """The learning rate for 0-based `epoch` of a training of `epochs` epochs.

    - constant: `initial`.
    - step: `values[0]` before epoch `boundaries[0]`, `values[i]` from epoch `boundaries[i-1]` on.
      The log's "1->15 1e-1, 16->30 1e-2, 31->50 1e-3, 51->60 1e-4" (1-based rows) is
      boundaries [15, 30, 50], values [1e-1, 1e-2, 1e-3, 1e-4].
    - poly: initial * (1 - epoch/epochs) ** power (pyimagesearch's poly_decay; docs/seed-log.md "EXP7": 1e-1, power 2.5).
    - cosine: initial * (1 + cos(pi * epoch/epochs)) / 2.
    - warmup_epochs W > 0: epochs 0..W-1 ramp linearly up to the schedule's value at epoch W,
      reaching (e + 1) / (W + 1) of it.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if epoch < lr.warmup_epochs:
        return learning_rate(lr, lr.warmup_epochs, epochs) * (epoch + 1) / (lr.warmup_epochs + 1)
    if lr.schedule == "constant":
        return float(lr.initial)
    if lr.schedule == "step":
        passed = sum(1 for b in lr.boundaries if epoch >= b)
        return float(lr.values[passed])
    if lr.schedule == "poly":
        return float(lr.initial * (1.0 - epoch / epochs) ** lr.power)
    if lr.schedule == "cosine":
        return float(lr.initial * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)))
    raise ValueError(f"config field train.lr.schedule: unknown schedule {lr.schedule!r}")


def initial_learning_rate(lr: LRConfig, epochs: int) -> float:
    """The rate the optimizer is built with (epoch 0's)."""
    return learning_rate(lr, 0, epochs)


def schedule_callback(lr: LRConfig, epochs: int) -> Any:
    """A Keras callback that sets the optimizer's rate from learning_rate() at each epoch start.

    It also records the rate as `learning_rate` in each epoch's logs (history, MLflow). Resumed
    trainings get the right rate: Keras passes the absolute epoch index.
    """
    import keras

    return keras.callbacks.LearningRateScheduler(lambda epoch, _current: learning_rate(lr, epoch, epochs))
