"""Which files are images, and what ingest does to each one's pixels: no OpenCV, numpy or Pillow here.

A leaf of its own, so that `longtail ingest` lists and plans the source, and hands its first batches to
the decoders' pool, before it loads the decoders itself (longtail.decode re-exports these names).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from longtail.errors import DataError
from longtail.image_size import IMAGE_SIZE_MAX

# Extensions treated as images: a file with one of these that fails to decode is *rejected*
# (listed with its reason); any other file is *ignored* (only counted).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif"}
)
RESIZE_MODES = ("stretch", "aspect")


@dataclass(frozen=True)
class PixelSettings:
    """What ingest does to each image after decoding, recorded as the split's `preprocessing` attribute.

    The keys are exactly longtail.preprocessing.INGEST_KEYS, so a model can refuse a split
    ingested differently from its training data.
    """

    image_size: int = 32
    resize: Literal["stretch", "aspect"] = "stretch"
    clahe: bool = False
    white_balance: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise DataError(f"image size must be a positive int, got {self.image_size!r}")
        if self.image_size > IMAGE_SIZE_MAX:
            raise DataError(f"image size must be at most {IMAGE_SIZE_MAX}, got {self.image_size}")
        if self.resize not in RESIZE_MODES:
            raise DataError(f"resize must be 'stretch' or 'aspect', got {self.resize!r}")

    def as_dict(self) -> dict[str, Any]:
        """The `preprocessing` attribute of a split: {image_size, resize, clahe, white_balance}."""
        return asdict(self)


def is_image_name(name: str) -> bool:
    """True for a file name with an image extension (case-insensitive)."""
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS
