"""The model registry: builders looked up by the name an experiment config gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from longtail.errors import ConfigError

ModelBuilder = Callable[..., Any]

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register `make_model(input_shape, num_classes, **args) -> keras.Model` under `name`.

    Adding a model is one file with one decorated builder, imported in longtail.models.
    """

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorate


def available_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **args: Any) -> Any:
    """Build the registered model `name`: a keras.Model that outputs float32 logits (softmax is in the loss and in prediction).

    Raises:
        ConfigError: for an unknown name (listing the known ones) or an argument the builder lacks.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"config field model.name: unknown model {name!r}; known models: {', '.join(available_models())}"
        )
    try:
        return _REGISTRY[name](tuple(input_shape), int(num_classes), **args)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            import inspect

            known = [p for p in inspect.signature(_REGISTRY[name]).parameters][2:]
            raise ConfigError(
                f"config field model.args: {e.args[0].split('() ')[-1]} for model {name!r}; "
                f"it takes: {', '.join(known)}"
            ) from e
        raise
