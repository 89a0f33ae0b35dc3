"""The experiment knobs a user turns in the Kubeflow UI, mapped onto experiment-config fields."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from longtail.config import ExperimentConfig, config_from_dict, config_to_dict

# Pipeline parameter name -> dotted config field. The pipeline exposes exactly these as typed
# parameters (defaults from the experiment YAML it was built from); every other field travels
# in the `base_config` parameter unchanged.
KNOBS: dict[str, str] = {
    "name": "name",
    "experiment": "experiment",
    "image_size": "data.image_size",
    "resize": "data.resize",
    "clahe": "data.clahe",
    "white_balance": "data.white_balance",
    "scale": "preprocess.scale",
    "weight_scheme": "weights.scheme",
    "weight_beta": "weights.beta",
    "model_name": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "optimizer": "train.optimizer.name",
    "lr_schedule": "train.lr.schedule",
    "lr_initial": "train.lr.initial",
    "lr_power": "train.lr.power",
    "label_smoothing": "train.label_smoothing.factor",
    "smoothing_mode": "train.label_smoothing.mode",
    "gpus": "train.gpus",
    "seed": "train.seed",
    "min_macro_f1": "evaluate.min_macro_f1",
    # The long-tail methods (see experiments/long-tail-methods.yaml).
    "loss": "train.loss.name",
    "loss_args": "train.loss.args",
    "weight_start_epoch": "weights.start_epoch",
    "mixup": "train.augmentation.mixup",
    "cutmix": "train.augmentation.cutmix",
    "mix_off_last_epochs": "train.augmentation.mix_off_last_epochs",
    "weight_decay": "train.optimizer.weight_decay",
    "posthoc_tau": "evaluate.posthoc_tau",
    # What every choice aims at: a class-balanced test set, or one drawn like the training set.
    "target_prior": "evaluate.target_prior",
}
# Knobs whose field takes a number or a word (posthoc_tau: 1.0 or tune): a string parameter in the
# pipeline, read as YAML like a `--set` value.
TEXT_KNOBS = {"posthoc_tau"}


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
    from longtail.errors import ConfigError

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
