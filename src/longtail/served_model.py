"""The model as an MLflow client meets it: raw images in, class names and probabilities out, through `longtail predict`'s own code.

MLflow loads the logged model's python_function flavour with this module (`_load_pyfunc`), from the
copy of the model directory the flavour holds (tracking/served.py writes it). Each image goes through
ingest's decoder, bounds and pixel settings (decode.to_pixels), then `longtail predict`'s batches,
TTA and post-hoc adjustment (prediction.predict_batch), as the model's config evaluates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from longtail.decode import MAX_FILE_BYTES, MAX_IMAGE_PIXELS, DecodeError, PixelSettings, as_stored, to_pixels
from longtail.errors import DataError
from longtail.model_dir import ModelDir
from longtail.prediction import check_prediction, predict_batch
from longtail.tracking.names import SERVED_IMAGE_COLUMN, SERVED_LABEL_COLUMN
from longtail.tracking.served import refusing_in_one_line

# Images predicted together, as `longtail predict`'s default batch.
BATCH_SIZE = 256


class ServedModel:
    """A model directory that predicts raw images: PNG/JPEG bytes or uint8 RGB arrays of any size."""

    def __init__(self, model_dir: str | Path) -> None:
        directory = ModelDir(model_dir)
        self.preprocessing = directory.preprocessing()
        self.pixels = PixelSettings(**self.preprocessing.ingest_settings())
        self.adjustment = directory.adjustment()
        # TTA as the model was evaluated and its submission written (config evaluate.tta, evaluate.tta_shift).
        evaluate = directory.config().get("evaluate") or {}
        self.tta, self.tta_shift = bool(evaluate.get("tta", False)), float(evaluate.get("tta_shift", 0.0))
        check_prediction(self.preprocessing, self.adjustment, self.tta_shift)
        if SERVED_LABEL_COLUMN in self.preprocessing.class_names:
            raise DataError(f"a class is named {SERVED_LABEL_COLUMN!r}, the served model's class-name column: "
                            "rename that class folder and train again")
        self.model = directory.load_model()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per image: its class name (`label`) and every class's probability (a column per class name).

        Args:
            model_input: a DataFrame whose `image` column holds PNG/JPEG bytes or uint8 (H, W, 3) RGB
                arrays (what MLflow serving hands over, base64 decoded), or a list of either.
            params: unused (MLflow's predict signature).

        Raises:
            DataError: one line naming the first image that is not one, and why.
        """
        pixels = [self.stored_pixels(image, i) for i, image in enumerate(images_of(model_input))]
        names = self.preprocessing.class_names
        chunks = [predict_batch(self.model, self.preprocessing, np.stack(pixels[i:i + BATCH_SIZE]), tta=self.tta,
                                adjustment=self.adjustment, tta_shift=self.tta_shift, source="the request")
                  for i in range(0, len(pixels), BATCH_SIZE)]
        probs = np.concatenate(chunks) if chunks else np.zeros((0, len(names)), np.float32)
        frame = pd.DataFrame(probs, columns=names)
        frame.insert(0, SERVED_LABEL_COLUMN, [names[i] for i in probs.argmax(axis=1)])
        return frame

    def stored_pixels(self, image: Any, index: int) -> np.ndarray:
        """One image as ingest would store it: decoded within ingest's bounds, resized, colour-corrected.

        Raises:
            DataError: "image <index>: <why>", one line.
        """
        try:
            if isinstance(image, (bytes, bytearray, memoryview)):
                data = bytes(image)
                if len(data) > MAX_FILE_BYTES:
                    raise DecodeError(f"{len(data)} bytes, over the {MAX_FILE_BYTES} bytes an image file may have")
                return to_pixels(data, self.pixels)
            if isinstance(image, np.ndarray):
                return as_stored(checked_array(image), self.pixels)
        except DecodeError as e:
            raise DataError(f"image {index}: {e}") from None
        raise DataError(f"image {index} is a {type(image).__name__}: give PNG/JPEG bytes or a uint8 (H, W, 3) RGB array")


def images_of(model_input: Any) -> list[Any]:
    """The images of a predict call: the `image` column of a DataFrame (or dict), or a list of images as given.

    Raises:
        DataError: a DataFrame or dict without that column.
    """
    if isinstance(model_input, (pd.DataFrame, dict)):
        if SERVED_IMAGE_COLUMN not in model_input:
            raise DataError(f"the input has no {SERVED_IMAGE_COLUMN!r} column (its columns: {list(model_input)[:5]}): "
                            "put the images' PNG/JPEG bytes there")
        return list(model_input[SERVED_IMAGE_COLUMN])
    return list(model_input)  # a list, or a uint8 batch (N, H, W, 3)


def checked_array(image: np.ndarray) -> np.ndarray:
    """A caller's pixels, refused unless uint8 RGB (H, W, 3) within ingest's pixel bound.

    Raises:
        DecodeError: naming the dtype, shape or size.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DecodeError(f"a {image.dtype} array of shape {image.shape}, not uint8 RGB (H, W, 3)")
    if not image.shape[0] or not image.shape[1] or image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise DecodeError(f"{image.shape[1]}x{image.shape[0]} pixels, outside 1 to {MAX_IMAGE_PIXELS} pixels")
    return np.ascontiguousarray(image)


def _load_pyfunc(path: str) -> Any:
    """MLflow's entry point (the python_function flavour's `loader_module`): the model directory at `path`,
    answering a bad image with a one-line MLflow error (a 400 from `mlflow models serve`)."""
    return refusing_in_one_line(ServedModel(path))
