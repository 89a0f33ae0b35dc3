"""Print '<name> <image ref>' for every step image, exactly as the compiled pipeline names them.

Used by `make images`, `make kind-load` and the kind scripts, so the tags built, loaded and
referenced all come from components/images.py. Registry and tag follow the same environment
variables as `python pipelines/compile.py`: LONGTAIL_IMAGE_REGISTRY and LONGTAIL_IMAGE_TAG.
"""

from __future__ import annotations

import os

from longtail.components.images import DEFAULT_REGISTRY, DEFAULT_TAG, IMAGES, image_ref


def main() -> None:
    registry = os.environ.get("LONGTAIL_IMAGE_REGISTRY") or DEFAULT_REGISTRY
    tag = os.environ.get("LONGTAIL_IMAGE_TAG") or DEFAULT_TAG
    for name in IMAGES:
        print(name, image_ref(name, registry=registry, tag=tag))


if __name__ == "__main__":
    main()
