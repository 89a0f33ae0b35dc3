"""The model directory contract: the Keras model plus preprocessing.json, applied identically everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longtail.errors import DataError

# Ingest-time operations that must match between the split a model trained on and the split it predicts.
INGEST_KEYS = ("image_size", "resize", "clahe", "white_balance")


@dataclass
class Preprocessing:
    """What turns a split's uint8 pixels into model inputs, saved beside every model.

    `resize`, `clahe` and `white_balance` were applied by ingest (uint8, before storage);
    `scale` is applied here in float32, after the colour operations, so mean subtraction can
    never wrap around in uint8 (docs/seed-log.md "EXP10": "CLAHE + WhiteBalance with mean subtraction will
    RUIN the image").
    """

    image_size: int
    class_names: list[str]
    scale: str = "scale"
    mean_rgb: list[float] | None = None
    resize: str = "stretch"
    clahe: bool = False
    white_balance: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scale not in ("scale", "mean_subtraction"):
            raise DataError(f"preprocessing scale must be 'scale' or 'mean_subtraction', got {self.scale!r}")
        if self.scale == "mean_subtraction" and (self.mean_rgb is None or len(self.mean_rgb) != 3):
            raise DataError("preprocessing scale 'mean_subtraction' needs mean_rgb with 3 values")

    @property
    def offset(self) -> np.ndarray:
        """Per-channel value subtracted before dividing by 255 (0 for plain /255)."""
        if self.scale == "mean_subtraction":
            return np.asarray(self.mean_rgb, dtype=np.float32)
        return np.zeros(3, dtype=np.float32)

    def to_float(self, images: Any) -> Any:
        """uint8 (..., 3) -> float32 model input; works on numpy arrays and tf tensors alike.

        /255 maps to [0, 1]; mean subtraction maps to (x - mean_rgb) / 255, centred near zero.
        """
        if type(images).__module__.startswith("numpy"):
            return (images.astype(np.float32) - self.offset) / np.float32(255.0)
        import tensorflow as tf  # only when called on tensors: evaluate/predict on numpy need no TF here

        x = tf.cast(images, tf.float32)
        if not self.offset.any():  # x - 0 is x: one pass over the batch fewer
            return x / 255.0
        # The same offset laid over a whole image: TF subtracts that ~2x faster than a (3,) vector
        # broadcast to every pixel, with the same values.
        shape = images.shape[1:] if images.shape.rank and images.shape[1:].is_fully_defined() else (3,)
        return (x - tf.constant(np.broadcast_to(self.offset, shape))) / 255.0

    def ingest_settings(self) -> dict[str, Any]:
        """The part of this preprocessing that ingest applied (checked against any split fed in)."""
        return {k: getattr(self, k) for k in INGEST_KEYS}

    def check_split(self, split_preprocessing: dict[str, Any], image_size: int, split_name: str) -> None:
        """Refuse a split ingested differently from the training data (train/serve skew).

        Raises:
            DataError: naming each setting that differs and the ingest flag that fixes it.
        """
        have = dict(split_preprocessing)
        have.setdefault("image_size", image_size)
        diffs = []
        for key, want in self.ingest_settings().items():
            got = have.get(key, {"clahe": False, "white_balance": False, "resize": "stretch"}.get(key))
            if got != want:
                diffs.append(f"{key}: model has {want!r}, split has {got!r}")
        if diffs:
            raise DataError(
                f"{split_name} was ingested differently from the model's training data ("
                + "; ".join(diffs)
                + "). Re-ingest it with the model's settings (--image-size, --resize, --clahe, --white-balance)."
            )

    @classmethod
    def from_split(cls, split_info: Any, scale: str) -> Preprocessing:
        """Build from a train split's attributes (longtail.splits.SplitInfo) and the config's scale."""
        p = split_info.preprocessing
        return cls(
            image_size=int(split_info.image_size),
            class_names=list(split_info.class_names),
            scale=scale,
            mean_rgb=split_info.mean_rgb,
            resize=p.get("resize", "stretch"),
            clahe=bool(p.get("clahe", False)),
            white_balance=bool(p.get("white_balance", False)),
        )

