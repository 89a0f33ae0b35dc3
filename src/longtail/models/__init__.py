"""The model registry: builders registered by name, chosen by the experiment config."""

# Importing each model module runs its @register_model decorator.
from longtail.models import resnet50, resnet_cifar, small_cnn  # noqa: F401
from longtail.models.registry import available_models, build_model, register_model

__all__ = ["available_models", "build_model", "register_model"]
