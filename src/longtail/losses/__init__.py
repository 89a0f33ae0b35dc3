"""The loss registry: per-sample losses on logits, chosen by `train.loss.name` in the experiment config."""

# Importing each loss module runs its @register_loss decorator.
from longtail.losses import cross_entropy, focal, ldam, logit_adjusted  # noqa: F401
from longtail.losses.registry import (
    available_losses,
    build_loss,
    check_loss,
    keras_loss,
    log_prior,
    register_loss,
)

__all__ = ["available_losses", "build_loss", "check_loss", "keras_loss", "log_prior", "register_loss"]
