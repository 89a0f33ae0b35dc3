"""Softmax cross-entropy on logits: the default loss (with class weights and label smoothing around it)."""

from __future__ import annotations

import numpy as np

from longtail.losses.registry import LossFn, cross_entropy_of, register_loss


@register_loss("cross_entropy")
def make_loss(class_counts: np.ndarray) -> LossFn:
    """Plain CE; class-balanced CE when `weights.scheme` gives class weights."""
    return cross_entropy_of
