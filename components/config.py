"""Step 0, resolve: merge the pipeline's knob parameters into the experiment config and validate it."""

from kfp import dsl

from longtail.components.images import image_ref


@dsl.component(base_image=image_ref("ingest"), install_kfp_package=False)
def resolve_config(base_config: dict, knobs: dict) -> dict:
    """Validate once, before any work: a bad knob fails here, naming its config field."""
    from longtail.config import config_to_dict
    from longtail.knobs import apply_knobs

    return config_to_dict(apply_knobs(base_config, knobs))
