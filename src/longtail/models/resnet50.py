"""ResNet-50 with the first block of docs/seed-log.md "EXP5": Conv7x7 -> activation -> BN -> MaxPool.

Built from keras layers (no pretrained weights, nothing downloaded): the stem as the log has it,
then pre-activation bottleneck stages (3, 4, 6, 3) at widths 256/512/1024/2048. The input size is
whatever the config's data.image_size is; `stem_stride` 1 keeps small images from shrinking to 1x1.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, regularizers

from longtail.errors import ConfigError
from longtail.models.registry import register_model
from longtail.models.resnet_cifar import stages_and_head


# As resnet_cifar's maxima; stem_stride: 2 for ImageNet-sized inputs, and 8 twice over (conv and pool)
# already brings 224 px to 4 px.
@register_model("resnet50", maxima={"stages": 128, "filters": 4096, "weight_decay": 1.0, "stem_stride": 8,
                                    "bn_momentum": 1.0, "bn_epsilon": 1.0})
def make_model(
    input_shape: tuple[int, int, int],
    num_classes: int,
    stages: Sequence[int] = (3, 4, 6, 3),
    filters: Sequence[int] = (64, 256, 512, 1024, 2048),
    weight_decay: float = 1e-4,
    stem_stride: int = 2,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 2e-5,
) -> keras.Model:
    """Build ResNet-50 with the Conv7x7 -> ReLU -> BN -> MaxPool stem.

    Args:
        stages: bottleneck modules per stage (ResNet-50: 3, 4, 6, 3).
        filters: the stem's width, then each stage's output width (len(stages) + 1 values).
        weight_decay: L2 factor on every kernel.
        stem_stride: stride of the 7x7 conv and of the max pool (2 for ImageNet-sized inputs).

    Returns:
        A functional keras.Model from float images to float32 logits (softmax in the loss and in prediction).
    """
    if len(filters) != len(stages) + 1:
        raise ConfigError(
            f"config field model.args.filters needs len(stages) + 1 = {len(stages) + 1} values, got {list(filters)}"
        )
    l2 = regularizers.L2(weight_decay) if weight_decay else None
    opts = dict(bottleneck=True, weight_decay=weight_decay, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)

    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(filters[0], 7, strides=stem_stride, padding="same", use_bias=False,
                      kernel_regularizer=l2)(inputs)
    x = layers.Activation("relu")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon)(x)
    x = layers.MaxPooling2D(3, strides=stem_stride, padding="same")(x)
    outputs = stages_and_head(x, stages, filters, num_classes, l2=l2, **opts)
    return keras.Model(inputs, outputs, name="resnet50")
