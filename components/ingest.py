"""Step 1, ingest: raw images (folder, CSV or s3:// prefix) to HDF5 splits plus ingest.json."""

from kfp import dsl

from longtail.components.images import image_ref


@dsl.component(base_image=image_ref("ingest"), install_kfp_package=False)
def ingest(source: str, config: dict, unlabelled: bool, data: dsl.Output[dsl.Dataset]):
    """Labelled: data/train.h5 + data/val.h5; unlabelled: data/test.h5. Always data/ingest.json."""
    import os

    from longtail.config import config_from_dict, ingest_settings
    from longtail.ingest import ingest as ingest_images
    from longtail.storage import S3Settings

    report = ingest_images(source, data.path, unlabelled=unlabelled, s3=S3Settings.from_env(os.environ),
                           **ingest_settings(config_from_dict(config)))
    data.metadata.update({"n_images": report["n_images"], "n_classes": report["n_classes"],
                          "rejected": report["rejected_total"]})
