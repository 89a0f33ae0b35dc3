"""The one place that names each step's container image; registry and tag are set at compile time.

Each component's decorator takes its image from here (`base_image=image_ref("ingest")`); the
pipelines' `wire()` keeps that image and only moves it to the compile-time registry and tag
(`retarget`); `make images` and `make kind-load` read the names from `python -m
longtail.components.images`, and pass the shared base to every step Dockerfile as a build argument.
See docs/architecture.md, "Step images".
"""

from __future__ import annotations

import os

from longtail import __version__

# Step image -> the images/ folder it is built from (images/<name>/Dockerfile). Each starts FROM the
# shared base (BASE: Python, CPU TensorFlow, the pinned dependencies and the library) and adds little:
# ingest: no OpenBLAS thread beside the decoders (ingest, weights, the config checks);
# train: TensorFlow's CUDA/cuDNN wheels for GPU nodes (train);
# evaluate: matplotlib rendering headless (evaluate, submit, compare).
IMAGES = ("ingest", "train", "evaluate")
# The shared layers every step image starts FROM (images/base/Dockerfile); built first, run by no step.
BASE = "base"
DEFAULT_REGISTRY = "longtail"
DEFAULT_TAG = __version__


def image_ref(name: str, registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG) -> str:
    """'<registry>/<name>:<tag>', e.g. longtail/train:0.1.0.

    Raises:
        ValueError: for a name that is neither one of IMAGES nor BASE.
    """
    if name not in (*IMAGES, BASE):
        raise ValueError(f"unknown step image {name!r}; known: {', '.join(IMAGES)}")
    return f"{registry.rstrip('/')}/{name}:{tag}"


def image_name(ref: str) -> str:
    """The step image a reference names: 'ingest' for 'longtail/ingest:0.1.0' (any registry or tag).

    Raises:
        ValueError: for a reference to an image that is not one of IMAGES.
    """
    name = ref.rpartition("/")[2].partition(":")[0]
    if name not in IMAGES:
        raise ValueError(f"{ref!r} is not a step image; known: {', '.join(IMAGES)}")
    return name


def retarget(ref: str, registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG) -> str:
    """The same step image as `ref` (a component's base_image), under another registry and tag."""
    return image_ref(image_name(ref), registry, tag)


def image_refs(registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG) -> dict[str, str]:
    """Every image to build, the shared base first: name -> reference."""
    return {name: image_ref(name, registry, tag) for name in (BASE, *IMAGES)}


def main() -> None:
    """Print '<name> <image ref>' per image, the base first, as the compiled pipeline names them.

    Registry and tag follow the same environment variables as `python pipelines/compile.py`:
    LONGTAIL_IMAGE_REGISTRY and LONGTAIL_IMAGE_TAG (unset or empty: the defaults).
    """
    registry = os.environ.get("LONGTAIL_IMAGE_REGISTRY") or DEFAULT_REGISTRY
    tag = os.environ.get("LONGTAIL_IMAGE_TAG") or DEFAULT_TAG
    for name, ref in image_refs(registry, tag).items():
        print(name, ref)


if __name__ == "__main__":
    main()
