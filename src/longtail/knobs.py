"""The experiment knobs a user turns in the Kubeflow UI, mapped onto experiment-config fields."""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Iterator
from typing import Any, Literal

import yaml

from longtail.config import ExperimentConfig, config_from_dict, config_to_dict
from longtail.errors import ConfigError


def _declared_knobs(section: type, prefix: str = "") -> Iterator[tuple[str, str, type, bool]]:
    """(knob, dotted config field, parameter type, text) for every field declared with `knob=`
    (longtail.config.setting), in declaration order."""
    hints = typing.get_type_hints(section)
    for f in dataclasses.fields(section):
        if f.metadata.get("knob"):
            yield f.metadata["knob"], prefix + f.name, _parameter_type(hints[f.name], f.metadata["text"]), \
                f.metadata["text"]
        elif dataclasses.is_dataclass(hints[f.name]):
            yield from _declared_knobs(hints[f.name], f"{prefix}{f.name}.")


def _parameter_type(annotation: Any, text: bool) -> type:
    """The KFP parameter type of a knob: its field's type; str for a Literal of words or a text knob."""
    if text:
        return str
    if typing.get_origin(annotation) is Literal:
        return type(typing.get_args(annotation)[0])
    return typing.get_origin(annotation) or annotation


# The knobs, read from the config declaration (longtail.config.setting(..., knob=...)). The pipeline
# exposes exactly these as typed parameters (defaults from the experiment YAML it was built from);
# every other field travels in the `base_config` parameter unchanged. The parameter lists of
# resolve_config and the training pipeline are written from them by longtail.pipelines.knob_signatures.
_DECLARED = list(_declared_knobs(ExperimentConfig))
# Pipeline parameter name -> dotted config field.
KNOBS: dict[str, str] = {knob: path for knob, path, _, _ in _DECLARED}
# Pipeline parameter name -> its KFP parameter type (bool, int, float, str or dict).
KNOB_TYPES: dict[str, type] = {knob: tp for knob, _, tp, _ in _DECLARED}
# Knobs whose field takes a number or a word (posthoc_tau: 1.0 or tune): a string parameter in the
# pipeline, read as YAML like a `--set` value.
TEXT_KNOBS = {knob for knob, _, _, text in _DECLARED if text}


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        d = d.setdefault(part, {})
    d[parts[-1]] = value


def knob_values(cfg: ExperimentConfig) -> dict[str, Any]:
    """The knob values of a config: the pipeline's parameter defaults, or a run's arguments."""
    raw = config_to_dict(cfg)
    return {knob: str(_get(raw, path)) if knob in TEXT_KNOBS else _get(raw, path) for knob, path in KNOBS.items()}


def apply_knobs(base_config: dict[str, Any], knobs: dict[str, Any]) -> ExperimentConfig:
    """Set each knob on a copy of `base_config` and validate the result.

    Args:
        base_config: a full or partial experiment config as plain data.
        knobs: pipeline parameter name -> value; names must be keys of KNOBS.

    Raises:
        ConfigError: for an unknown knob or a value the config rejects (named by its config field).
    """
    raw = copy.deepcopy(base_config or {})
    for knob, value in knobs.items():
        if knob not in KNOBS:
            raise ConfigError(f"unknown pipeline parameter {knob!r}; known: {', '.join(KNOBS)}")
        if knob in TEXT_KNOBS and isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else value
        _set(raw, KNOBS[knob], value)
    return config_from_dict(raw)


def pod_gpus(gpus: int) -> int:
    """The GPUs a train pod requests for `train.gpus`: 0 means "every visible GPU", and the pod still asks for one."""
    return max(1, gpus)


def without_nulls(value: Any) -> Any:
    """Drop None entries recursively: KFP parameters cannot hold null, and every config field defaults."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def config_to_params(cfg: ExperimentConfig) -> dict[str, Any]:
    """A config as a KFP dict parameter: plain data without nulls (every null field defaults back)."""
    return without_nulls(config_to_dict(cfg))
