"""Step 2, weights: class weights from the train split's class counts."""

from kfp import dsl

from longtail.components.images import image_ref


@dsl.component(base_image=image_ref("ingest"), install_kfp_package=False)
def weights(data: dsl.Input[dsl.Dataset], config: dict, class_weights: dsl.Output[dsl.Artifact]):
    """Writes class_weights (a JSON file) for the scheme and beta the config names."""
    from longtail.class_weights import write_weights
    from longtail.splits import split_path

    result = write_weights(split_path(data.path, "train"), class_weights.path,
                           scheme=config["weights"]["scheme"], beta=config["weights"]["beta"])
    class_weights.metadata.update({"scheme": result["scheme"], "min": result["min"], "max": result["max"]})
