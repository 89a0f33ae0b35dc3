"""Every registered model: logits of the right shape, no NaNs, and a gradient for every trainable weight."""

from __future__ import annotations

import numpy as np
import pytest

from longtail.errors import ConfigError
from longtail.models import available_models, build_model

# Tiny arguments per model so the test stays fast; a new model must add its own line here.
TINY = {
    "resnet_cifar": ((16, 16, 3), {"stages": (1, 1), "filters": (4, 8, 16)}),
    "resnet50": ((32, 32, 3), {"stages": (1, 1), "filters": (4, 8, 16)}),
    "small_cnn": ((16, 16, 3), {"width": 4}),
}


def digits_batch(shape: tuple[int, int, int], n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Real digits, upscaled to `shape`, scaled /255, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    reps = shape[0] // 8
    x = np.kron(d.images[:n] / 16.0, np.ones((reps, reps)))[..., None].repeat(3, axis=-1)
    return x.astype("float32"), d.target[:n].astype("int32")


def test_every_model_has_tiny_args() -> None:
    assert set(available_models()) <= set(TINY), "add tiny args for the new model to TINY"


@pytest.mark.parametrize("name", available_models())
def test_model_outputs_and_gradients(name: str) -> None:
    import keras
    import tensorflow as tf

    shape, args = TINY[name]
    model = build_model(name, shape, 10, **args)
    x, y = digits_batch(shape)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        loss = tf.reduce_mean(loss) + tf.add_n(model.losses or [tf.constant(0.0)])
    assert tuple(logits.shape) == (len(x), 10)
    assert logits.dtype == tf.float32
    assert np.isfinite(logits.numpy()).all()
    # Logits, not probabilities: the softmax is in the loss (so a loss can shift logits) and in prediction.
    assert model.layers[-1].get_config()["activation"] == "linear"
    assert not np.allclose(logits.numpy().sum(axis=1), 1.0, atol=1e-3)
    grads = tape.gradient(loss, model.trainable_variables)
    no_grad = [v.path for v, g in zip(model.trainable_variables, grads, strict=True)
               if g is None or not np.any(g.numpy())]
    assert not no_grad, f"{name}: weights without gradient: {no_grad}"


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet_152'.*resnet_cifar"):
        build_model("resnet_152", (16, 16, 3), 10)


def test_unknown_argument_names_the_field() -> None:
    with pytest.raises(ConfigError, match="model.args.*'depth'.*small_cnn"):
        build_model("small_cnn", (16, 16, 3), 10, depth=3)


def test_log_sized_resnet_cifar_builds() -> None:
    # The seed log's model: stages (9, 9, 9), filters (64, 64, 128, 256).
    model = build_model("resnet_cifar", (32, 32, 3), 209, stages=(9, 9, 9), filters=(64, 64, 128, 256),
                        weight_decay=5e-4)
    assert model.output_shape == (None, 209)
    assert len(model.losses) > 80  # L2 on every kernel


def test_every_experiment_config_names_a_model_and_its_arguments() -> None:
    import inspect
    from pathlib import Path

    from longtail.config import load_config
    from longtail.models.registry import model_builder

    folder = Path(__file__).parents[2] / "experiments"
    configs = sorted(folder.glob("exp[0-9]*.yaml")) + [folder / "demo.yaml"]  # not sweep files
    assert len(configs) == 12  # exp01 ... exp11 and demo
    for path in configs:
        cfg = load_config(path)
        assert cfg.model.name in available_models(), path
        params = inspect.signature(model_builder(cfg.model.name)).parameters
        assert set(cfg.model.args) <= set(params), f"{path}: {set(cfg.model.args) - set(params)}"
