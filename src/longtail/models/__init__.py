"""The model registry: builders registered by name, chosen by the experiment config.

Every module of this folder is imported here, which runs its @register_model decorator: a new model
is its file, and the names the config check reads from the source (no TensorFlow) are the names
registered (name_registry.import_modules).
"""

from longtail.models.registry import available_models, build_model, register_model
from longtail.name_registry import import_modules

import_modules(__name__, __path__)

__all__ = ["available_models", "build_model", "register_model"]
