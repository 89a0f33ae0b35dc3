"""The one place that names each step's container image; registry and tag are set at compile time."""

from __future__ import annotations

from longtail import __version__

# Step image -> the images/ folder it is built from (images/<name>/Dockerfile).
# ingest: slim Python + OpenCV/h5py/boto3 (ingest, weights);
# train: the official TensorFlow GPU image (train);
# evaluate: CPU TensorFlow + scikit-learn + matplotlib (evaluate, submit, compare).
IMAGES = ("ingest", "train", "evaluate")
DEFAULT_REGISTRY = "longtail"
DEFAULT_TAG = __version__


def image_ref(name: str, registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG) -> str:
    """'<registry>/<name>:<tag>', e.g. longtail/train:0.1.0.

    Raises:
        ValueError: for a name that is not one of IMAGES.
    """
    if name not in IMAGES:
        raise ValueError(f"unknown step image {name!r}; known: {', '.join(IMAGES)}")
    return f"{registry.rstrip('/')}/{name}:{tag}"
