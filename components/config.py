"""Step 0, resolve: merge the pipeline's knob parameters into the experiment config and validate it."""

from typing import NamedTuple

from kfp import dsl

from longtail.components.images import image_ref


# The knob parameters after base_config are written from longtail.knobs by
# `python -m longtail.pipelines.knob_signatures --write`: declare a knob in longtail.config, not here.
@dsl.component(base_image=image_ref("ingest"), install_kfp_package=False)
def resolve_config(
    base_config: dict,
    name: str,
    experiment: str,
    image_size: int,
    resize: str,
    clahe: bool,
    white_balance: bool,
    scale: str,
    weight_scheme: str,
    weight_beta: float,
    model_name: str,
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr_schedule: str,
    lr_initial: float,
    lr_power: float,
    label_smoothing: float,
    smoothing_mode: str,
    gpus: int,
    seed: int,
    min_macro_f1: float,
    loss: str,
    loss_args: dict,
    weight_start_epoch: int,
    mixup: float,
    cutmix: float,
    mix_off_last_epochs: int,
    weight_decay: float,
    posthoc_tau: str,
    target_prior: str,
    precision: str,
    ema: float,
    random_erasing: float,
    jit_compile: str,
) -> dict:
    """Validate once, before any work: a bad knob fails here, naming its config field.

    Each knob is its own typed parameter (longtail.knobs.KNOBS): inside a dict, KFP would
    substitute them as strings.
    """
    knobs = dict(locals())
    base = knobs.pop("base_config")
    from longtail.knobs import apply_knobs, config_to_params

    return config_to_params(apply_knobs(base, knobs))


@dsl.component(base_image=image_ref("ingest"), install_kfp_package=False)
def validate_config(config: dict) -> NamedTuple("Outputs", config=dict, gpus=int):
    """A sweep's config as given (no knobs): validated and fully defaulted, with the GPUs its train step requests."""
    from collections import namedtuple

    from longtail.config import config_from_dict
    from longtail.knobs import config_to_params, pod_gpus

    cfg = config_from_dict(config)
    return namedtuple("Outputs", ["config", "gpus"])(config_to_params(cfg), pod_gpus(cfg.train.gpus))
