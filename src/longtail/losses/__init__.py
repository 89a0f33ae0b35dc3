"""The loss registry: per-sample losses on logits, chosen by `train.loss.name` in the experiment config.

Every module of this folder is imported here, which runs its @register_loss decorator: a new loss is
its file (name_registry.import_modules).
"""

from longtail.losses.registry import (
    available_losses,
    build_loss,
    check_loss,
    keras_loss,
    log_prior,
    register_loss,
)
from longtail.name_registry import import_modules

import_modules(__name__, __path__)

__all__ = ["available_losses", "build_loss", "check_loss", "keras_loss", "log_prior", "register_loss"]
