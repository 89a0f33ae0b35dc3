"""The pre-activation bottleneck ResNet "dedicated to CIFAR-10" of the seed log's EXP1-EXP11 (docs/seed-log.md).

After pyimagesearch's ResNet (Deep Learning for Computer Vision, after He et al. 2016, "Identity
Mappings in Deep Residual Networks"): BN on the input, one 3x3 conv, then stages of
BN-ReLU-conv bottleneck modules, L2 weight decay on every kernel. Global average pooling instead of a
fixed 8x8 pool, so any input size works. The log's model is stages (9, 9, 9), filters
(64, 64, 128, 256); the defaults here are small enough to train on a laptop CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, regularizers

from longtail.errors import ConfigError
from longtail.models.registry import register_model


def residual_module(
    x: keras.KerasTensor,
    filters: int,
    stride: int,
    *,
    reduce: bool,
    bottleneck: bool,
    weight_decay: float,
    bn_momentum: float,
    bn_epsilon: float,
) -> keras.KerasTensor:
    """One pre-activation module; `reduce` projects the shortcut (first module of a stage)."""
    l2 = regularizers.L2(weight_decay) if weight_decay else None

    def bn_relu(t: keras.KerasTensor) -> keras.KerasTensor:
        t = layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon)(t)
        return layers.Activation("relu")(t)

    def conv(t: keras.KerasTensor, n: int, k: int, s: int = 1) -> keras.KerasTensor:
        return layers.Conv2D(n, k, strides=s, padding="same", use_bias=False, kernel_regularizer=l2)(t)

    act = bn_relu(x)
    if bottleneck:
        # 1x1 squeeze to filters/4, 3x3 (strided), 1x1 expand back to filters.
        y = conv(act, max(1, filters // 4), 1)
        y = conv(bn_relu(y), max(1, filters // 4), 3, stride)
        y = conv(bn_relu(y), filters, 1)
    else:
        y = conv(act, filters, 3, stride)
        y = conv(bn_relu(y), filters, 3)
    # The projection reads the activated input, as in the pre-activation paper.
    shortcut = conv(act, filters, 1, stride) if reduce else x
    return layers.Add()([y, shortcut])


# stages: the log's largest is 9 modules a stage, ResNet-1001 (He et al. 2016) has 111; filters: 2 x
# ResNet-50's widest (2048); weight_decay: the log uses 1e-4 to 5e-4; a BN momentum or epsilon is <= 1.
@register_model("resnet_cifar", maxima={"stages": 128, "filters": 4096, "weight_decay": 1.0,
                                        "bn_momentum": 1.0, "bn_epsilon": 1.0})
def make_model(
    input_shape: tuple[int, int, int],
    num_classes: int,
    stages: Sequence[int] = (3, 3, 3),
    filters: Sequence[int] = (16, 64, 128, 256),
    weight_decay: float = 1e-4,
    bottleneck: bool = True,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 2e-5,
) -> keras.Model:
    """Build the CIFAR ResNet.

    Args:
        stages: modules per stage; each stage after the first halves the resolution.
        filters: the stem conv's width, then each stage's output width (len(stages) + 1 values).
        weight_decay: L2 factor on every kernel (the seed log's reg=1e-4 / 5e-4; docs/seed-log.md).
        bottleneck: 1x1-3x3-1x1 modules at filters/4 inside (the seed log's, docs/seed-log.md); False gives two 3x3 convs.

    Returns:
        A functional keras.Model from float images to float32 logits (softmax in the loss and in prediction).
    """
    if len(filters) != len(stages) + 1:
        raise ConfigError(
            f"config field model.args.filters needs len(stages) + 1 = {len(stages) + 1} values, got {list(filters)}"
        )
    opts = dict(bottleneck=bottleneck, weight_decay=weight_decay, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
    l2 = regularizers.L2(weight_decay) if weight_decay else None

    inputs = keras.Input(shape=input_shape)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon)(inputs)
    x = layers.Conv2D(filters[0], 3, padding="same", use_bias=False, kernel_regularizer=l2)(x)
    outputs = stages_and_head(x, stages, filters, num_classes, l2=l2, **opts)
    return keras.Model(inputs, outputs, name="resnet_cifar")


def stages_and_head(x, stages: Sequence[int], filters: Sequence[int], num_classes: int, *, l2, **opts):
    """Residual stages (stride 2 from the second on), then BN → ReLU → pool → linear classifier (logits).

    Shared by every ResNet in the registry; `opts` are residual_module's keyword arguments.
    """
    for i, n_modules in enumerate(stages):
        stride = 1 if i == 0 else 2
        x = residual_module(x, filters[i + 1], stride, reduce=True, **opts)
        for _ in range(n_modules - 1):
            x = residual_module(x, filters[i + 1], 1, reduce=False, **opts)
    x = layers.BatchNormalization(momentum=opts["bn_momentum"], epsilon=opts["bn_epsilon"])(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(num_classes, kernel_regularizer=l2)(x)
    # Logits, cast to float32 so mixed-precision training computes the loss in float32.
    return layers.Activation("linear", dtype="float32", name="logits")(x)
