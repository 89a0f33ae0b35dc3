"""The served model's inputs: PNG bytes and uint8 arrays of any size meet ingest's pixels, and a bad image is one line."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from digits_models import CLASS_NAMES, make_digits, train_model_dir

from longtail.errors import DataError
from longtail.model_dir import ModelDir
from longtail.prediction import predict_probabilities
from longtail.served_model import ServedModel
from longtail.splits import read_arrays


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    data = make_digits(root / "data")
    model_dir = train_model_dir(data, root / "model", scale="mean_subtraction", epochs=1)
    return data, model_dir, ServedModel(model_dir)


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image[:, :, ::-1])[1].tobytes()


def test_png_bytes_and_arrays_of_any_size_predict_as_the_split_does(served):
    data, model_dir, model = served
    images = read_arrays(data.test_h5)[0][:6]
    expected = predict_probabilities(ModelDir(model_dir).load_model(), ModelDir(model_dir).preprocessing(), data.test_h5)[:6]
    as_png = model.predict(pd.DataFrame({"image": [png(i) for i in images]}))
    assert list(as_png.columns) == ["label", *CLASS_NAMES]
    assert list(as_png["label"]) == [CLASS_NAMES[i] for i in expected.argmax(axis=1)]
    assert np.abs(as_png[CLASS_NAMES].to_numpy() - expected).max() <= 1e-6
    # 8 px stored; a 4x larger array is resized by ingest's own code, and a same-size one is kept as is.
    large = [cv2.resize(i, (32, 32), interpolation=cv2.INTER_NEAREST) for i in images]
    assert list(model.predict(large)["label"]) == list(model.predict(list(images))["label"]) == list(as_png["label"])


@pytest.mark.parametrize(("image", "reason"), [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image 1: "),
    (np.zeros((8, 8), np.uint8), "image 1: a uint8 array of shape (8, 8), not uint8 RGB (H, W, 3)"),
    (np.zeros((8, 8, 3), np.float32), "image 1: a float32 array"),
    ("aGVsbG8=", "image 1 is a str: give PNG/JPEG bytes or a uint8 (H, W, 3) RGB array"),
])
def test_a_bad_image_is_one_line_that_names_it(served, image, reason):
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(DataError) as e:
        served[2].predict(pd.DataFrame({"image": [good, image]}))
    assert str(e.value).startswith(reason) and "\n" not in str(e.value)


def test_a_frame_without_the_image_column_says_which_column(served):
    with pytest.raises(DataError, match="the input has no 'image' column"):
        served[2].predict(pd.DataFrame({"png": [b""]}))
