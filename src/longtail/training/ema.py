"""Weight averaging that warms up: Keras' `use_ema` with its momentum held down over the first steps.

Keras' own average (`use_ema=True`) uses one momentum from the second step on. At 0.995 per step, the
average after 200 steps still holds 0.995**200 = 37% of the weights of step 1: a run of a few
hundred steps (a small folder, a short run, a search's early epochs) is scored, checkpointed and
selected on an average that is mostly the untrained network.

Here the momentum at step t (0-based, the optimizer's `iterations` before the update) is

    0                                   at t = 0 (the average starts as the first step's weights),
    min(ema, (1 + t) / (10 + t))        after,

the schedule of TensorFlow's `ExponentialMovingAverage(num_updates=...)` and timm's model EMA: at
step 10 the average spans about the last 2 steps, at step 100 about the last 12, and from step
(10 * ema - 1) / (1 - ema) on (1,789 steps at 0.995) it is Keras' constant momentum. A long run's
average is unchanged; a short one's follows its own weights.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# (1 + t) / (WARMUP_OFFSET + t): the momentum's warm-up, as TensorFlow's ExponentialMovingAverage.
WARMUP_OFFSET = 10.0


def ema_momentum_at(step: int, ema: float) -> float:
    """The momentum the average uses at 0-based step `step` (the schedule above), in plain Python."""
    if step == 0:
        return 0.0
    return min(ema, (1.0 + step) / (WARMUP_OFFSET + step))


class WarmupEMA:
    """Mixin for a Keras optimizer: its moving average of the weights uses `ema_momentum_at`."""

    use_ema: bool
    ema_momentum: float
    iterations: Any
    _model_variables_moving_average: list[Any]

    def _update_model_variables_moving_average(self, trainable_variables: list[Any]) -> None:
        if not self.use_ema:
            return
        step = ops.cast(self.iterations, "float32")
        warm = ops.divide(ops.add(step, 1.0), ops.add(step, WARMUP_OFFSET))
        momentum = ops.where(ops.equal(self.iterations, 0), 0.0, ops.minimum(warm, self.ema_momentum))
        for var, average in zip(trainable_variables, self._model_variables_moving_average, strict=False):
            if average is None:
                continue
            m = ops.cast(momentum, var.dtype)
            average.assign(ops.add(ops.multiply(m, average), ops.multiply(ops.subtract(1, m), var)))


@keras.saving.register_keras_serializable(package="longtail")
class WarmupSGD(WarmupEMA, keras.optimizers.SGD):
    """SGD whose weight average (use_ema) warms up (longtail.training.ema)."""


@keras.saving.register_keras_serializable(package="longtail")
class WarmupAdam(WarmupEMA, keras.optimizers.Adam):
    """Adam whose weight average (use_ema) warms up (longtail.training.ema)."""
