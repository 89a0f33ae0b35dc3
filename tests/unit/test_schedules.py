"""Learning-rate schedules give the exact rate the seed log's tables and formulas name."""

from __future__ import annotations

import math

import pytest

from longtail.config import LRConfig
from longtail.schedules import learning_rate


def test_step_reproduces_exp5_table() -> None:
    # EXP5/EXP6: 1->15 1e-1, 16->30 1e-2, 31->50 1e-3, 51->60 1e-4 (1-based epochs in the log).
    lr = LRConfig(schedule="step", boundaries=[15, 30, 50], values=[1e-1, 1e-2, 1e-3, 1e-4])
    expected = {0: 1e-1, 14: 1e-1, 15: 1e-2, 29: 1e-2, 30: 1e-3, 49: 1e-3, 50: 1e-4, 59: 1e-4}
    assert {e: learning_rate(lr, e, 60) for e in expected} == expected


def test_poly_is_exp7_decay() -> None:
    lr = LRConfig(schedule="poly", initial=0.1, power=2.5)
    assert learning_rate(lr, 0, 40) == 0.1
    assert learning_rate(lr, 20, 40) == pytest.approx(0.1 * 0.5**2.5, rel=1e-12)
    assert learning_rate(lr, 39, 40) == pytest.approx(0.1 * (1 / 40) ** 2.5, rel=1e-12)


def test_cosine_and_constant() -> None:
    cos = LRConfig(schedule="cosine", initial=0.2)
    assert learning_rate(cos, 0, 10) == pytest.approx(0.2)
    assert learning_rate(cos, 5, 10) == pytest.approx(0.1)
    assert learning_rate(cos, 9, 10) == pytest.approx(0.1 * (1 + math.cos(math.pi * 0.9)))
    assert learning_rate(LRConfig(schedule="constant", initial=1e-4), 33, 40) == 1e-4


def test_warmup_ramps_to_the_schedule() -> None:
    lr = LRConfig(schedule="poly", initial=0.1, power=1.0, warmup_epochs=3)
    at_3 = 0.1 * (1 - 3 / 10)
    assert [learning_rate(lr, e, 10) for e in range(4)] == pytest.approx(
        [at_3 * 1 / 4, at_3 * 2 / 4, at_3 * 3 / 4, at_3])


@pytest.mark.slow
def test_keras_callback_sets_the_optimizer_rate_per_epoch(tmp_path) -> None:
    import keras
    import numpy as np

    from longtail.schedules import schedule_callback

    lr = LRConfig(schedule="step", boundaries=[1, 2], values=[0.5, 0.25, 0.125])
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x = np.arange(8, dtype="float32").reshape(4, 2)
    history = model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[schedule_callback(lr, 3)])
    assert history.history["learning_rate"] == pytest.approx([0.5, 0.25, 0.125])
