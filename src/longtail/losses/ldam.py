"""Label-distribution-aware margin loss (Cao et al. 2019, "Learning Imbalanced Datasets with LDAM")."""

from __future__ import annotations

import numpy as np

from longtail.losses.registry import LossFn, cross_entropy_of, number_arg, register_loss


def ldam_margins(class_counts: np.ndarray, max_margin: float) -> np.ndarray:
    """Per-class margins proportional to n_c^(-1/4), scaled so the rarest class gets `max_margin`."""
    m = np.power(class_counts, -0.25)
    return (m * (max_margin / m.max())).astype(np.float32)


# max_margin: Cao et al. use 0.5 (experiments/ use up to 2), on logits a few units apart; scale: they use 30.
@register_loss("ldam", maxima={"max_margin": 10, "scale": 100})
def make_loss(class_counts: np.ndarray, max_margin: float = 0.5, scale: float = 1.0) -> LossFn:
    """CE on scale * (logits - margin of the true class on the true logit only).

    Rare classes must win by a larger margin. Pair it with `weights.start_epoch` for LDAM-DRW.
    Cao et al. use scale 30 on a cosine classifier (logits in [-1, 1]); on the plain linear heads
    of the model registry the logits are already unnormalised, so the default scale is 1.
    With soft targets (mixup/cutmix, label smoothing) each class's margin is weighted by its target.

    Args:
        max_margin: the rarest class's margin (> 0).
        scale: the logits' multiplier s (> 0).
    """
    max_margin = number_arg(max_margin, "max_margin", "> 0", lambda v: v > 0)
    scale = number_arg(scale, "scale", "> 0", lambda v: v > 0)
    margins = ldam_margins(class_counts, max_margin)

    def loss(targets, logits):
        return cross_entropy_of(targets, scale * (logits - targets * margins))

    return loss
