"""A tiny convolutional net: seconds to train, for tests and smoke runs."""

from __future__ import annotations

import keras
from keras import layers

from longtail.models.registry import register_model


# width: 16 by default; at 1024 the second conv alone holds 19 million weights. dropout: Keras takes < 1.
@register_model("small_cnn", maxima={"width": 1024, "dropout": 0.99})
def make_model(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: int = 16,
    dropout: float = 0.0,
) -> keras.Model:
    """Two conv-BN-ReLU blocks, global average pooling, a linear classifier (logits).

    Args:
        width: filters of the first conv (the second has twice as many).
        dropout: dropout rate before the classifier.

    Returns:
        A functional keras.Model from float images to float32 logits (softmax in the loss and in prediction).
    """
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(2 * width, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(num_classes)(x)
    outputs = layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")
