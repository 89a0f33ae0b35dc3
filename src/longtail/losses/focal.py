"""Focal loss (Lin et al. 2017); with class weights it is class-balanced focal loss (Cui et al. 2019)."""

from __future__ import annotations

import numpy as np

from longtail.losses.registry import LossFn, number_arg, register_loss


# gamma: Lin et al. use 0.5 to 5; at 10, (1 - p)^gamma already weighs an example classified at p = 0.5 by 1e-3.
@register_loss("focal", maxima={"gamma": 10})
def make_loss(class_counts: np.ndarray, gamma: float = 2.0) -> LossFn:
    """-sum_c y_c (1 - p_c)^gamma log p_c: well-classified examples count less; gamma = 0 is CE.

    Args:
        gamma: the focusing exponent (>= 0).
    """
    gamma = number_arg(gamma, "gamma", ">= 0", lambda v: v >= 0)

    def loss(targets, logits):
        import tensorflow as tf

        log_p = tf.nn.log_softmax(logits, axis=-1)
        focus = tf.pow(1.0 - tf.exp(log_p), gamma) if gamma else 1.0
        return -tf.reduce_sum(targets * focus * log_p, axis=-1)

    return loss
