"""Logit-adjusted cross-entropy (Menon et al. 2021, "Long-tail learning via logit adjustment")."""

from __future__ import annotations

import numpy as np

from longtail.losses.registry import LossFn, cross_entropy_of, log_prior, number_arg, register_loss


# tau: Menon et al. use 1 to 2; 10 is the upper bound of evaluate.posthoc_tau, the same adjustment after training.
@register_loss("logit_adjusted", maxima={"tau": 10})
def make_loss(class_counts: np.ndarray, tau: float = 1.0) -> LossFn:
    """CE on (logits + tau * log prior), the prior from the train split's class counts.

    tau = 1 is Balanced Softmax (Ren et al. 2020): the softmax is fitted to the long-tailed train
    distribution, so the bare logits estimate a class-balanced one and predicting with them (no
    offset) suits a balanced test set. tau = 0 is plain CE.

    Where it suits: a long-tailed train split scored on a balanced test (macro-F1), with at least a
    few images in the rarest class. Where it hurts: a test drawn like the train split (it gives up
    head-class accuracy), and classes of one or two images, whose log-prior offset is the largest and
    rests on a count that is mostly chance (benchmarks/panel.py's photos row has 5).

    Args:
        tau: how strongly rare classes' logits are pushed up during training (>= 0).
    """
    tau = number_arg(tau, "tau", ">= 0", lambda v: v >= 0)
    offset = (tau * log_prior(class_counts)).astype(np.float32)

    def loss(targets, logits):
        return cross_entropy_of(targets, logits + offset)

    return loss
