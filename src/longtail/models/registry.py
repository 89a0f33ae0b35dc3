"""The model registry: builders looked up by the name an experiment config gives."""

from __future__ import annotations

import inspect
from typing import Any

from longtail.errors import ConfigError
from longtail.name_registry import Registry, check_maxima

_MODELS = Registry("model", "model.name")


# Adding a model is one file with one builder `make_model(input_shape, num_classes, **args) -> keras.Model`
# decorated @register_model("name", maxima={arg: largest value}); longtail.models imports every module of
# its folder. The config check reads the maxima from the source (name_registry.maxima_in_package).
register_model = _MODELS.register
available_models = _MODELS.names  # every registered name, sorted
model_builder = _MODELS.get  # the builder of a name; ConfigError for an unknown one, listing the known ones
model_maxima = _MODELS.maxima  # name -> the maxima its registration declares


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **args: Any) -> Any:
    """Build the registered model `name`: a keras.Model that outputs float32 logits (softmax is in the loss and in prediction).

    Raises:
        ConfigError: for an unknown name (listing the known ones), an argument the builder lacks, or one
            over the maximum its registration declares.
    """
    builder = model_builder(name)
    check_maxima(args, _MODELS.maxima[name], "model.args")
    try:
        return builder(tuple(input_shape), int(num_classes), **args)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            known = [p for p in inspect.signature(builder).parameters][2:]
            raise ConfigError(
                f"config field model.args: {e.args[0].split('() ')[-1]} for model {name!r}; "
                f"it takes: {', '.join(known)}"
            ) from e
        raise
    except ValueError as e:  # Keras refusing a layer size or rate the config gave
        reason = " ".join(str(e).split())[:200]
        raise ConfigError(f"config field model.args {args} do not build model {name!r}: {reason}") from e
