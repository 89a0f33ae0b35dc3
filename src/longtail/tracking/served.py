"""The logged model's two flavours: Keras for the bare network, python_function for raw images (longtail.served_model).

`save_model` is the flavour module's one function MLflow's `Model.log` calls. It saves the Keras
flavour as `mlflow.keras` does, copies the model directory's prediction files beside it, and points
the python_function flavour at longtail's own loader instead of Keras': the signature and the input
example then describe what a client sends (image bytes) and gets back (class names, probabilities).
"""

from __future__ import annotations

import io
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from longtail.errors import LongtailError
from longtail.model_dir import ModelDir
from longtail.tracking.names import (
    SERVED_IMAGE_COLUMN,
    SERVED_LABEL_COLUMN,
    SERVED_MODEL_DIR,
    SERVED_MODEL_LOADER,
)


def save_model(path: str, mlflow_model: Any, *, keras_model: Any, tensor_example: np.ndarray, model_dir: str | Path,
               pip_requirements: list[str], **_: Any) -> None:
    """Write the MLflow model at `path`: flavours keras and python_function, the served signature and example.

    Args:
        keras_model: the network the Keras flavour holds (`mlflow.keras.load_model` returns it).
        tensor_example: a float32 batch (1, H, W, 3) for the network's own tensor signature.
        model_dir: the model directory whose prediction files (ModelDir.prediction_files) the
            python_function flavour reads, copied into `path/longtail`.
        pip_requirements: the Keras flavour's; longtail itself is added, as the loader is its module.
        _: what `Model.log` passes on to every flavour and this one does not use.
    """
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.models.utils import _save_example  # every flavour's save_model writes its example with it

    tensor_signature = infer_signature(tensor_example, np.asarray(keras_model(tensor_example, training=False)))
    mlflow.keras.save_model(keras_model, path, mlflow_model=mlflow_model, signature=tensor_signature,
                            pip_requirements=[*pip_requirements, _longtail_requirement()])
    served = Path(path) / SERVED_MODEL_DIR
    served.mkdir()
    for file in ModelDir(model_dir).prediction_files():
        shutil.copy2(file, served / file.name)
    preprocessing = ModelDir(served).preprocessing()
    mlflow_model.signature = served_signature(preprocessing.class_names)
    _save_example(mlflow_model, served_example(preprocessing.image_size), path)
    keras_pyfunc = mlflow_model.flavors["python_function"]
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=SERVED_MODEL_LOADER, data=SERVED_MODEL_DIR,
                               conda_env=keras_pyfunc["env"]["conda"], python_env=keras_pyfunc["env"]["virtualenv"])
    mlflow_model.save(str(Path(path) / "MLmodel"))


def served_signature(class_names: list[str]) -> Any:
    """Image bytes in (column `image`); out, the class name (`label`) and a float32 probability per class."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", SERVED_IMAGE_COLUMN)]),
        outputs=Schema([ColSpec("string", SERVED_LABEL_COLUMN)] + [ColSpec("float", name) for name in class_names]),
    )


def served_example(side: int) -> Any:
    """The input example the model page shows: one mid-grey PNG of the model's size, in the `image` column."""
    import pandas as pd
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(png, format="PNG")
    return pd.DataFrame({SERVED_IMAGE_COLUMN: [png.getvalue()]})


def refusing_in_one_line(model: Any) -> Any:
    """`model` (anything with predict) whose longtail errors reach MLflow as an MlflowException (HTTP 400)
    whose message stays the one line that names the bad input."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class InputRefused(MlflowException):
        """MLflow's scoring server rewrites the message of an MlflowException raised by predict to
        "Failed to predict data '<the whole input frame>'. Error: <message>" (mlflow.pyfunc.scoring_server
        `invocations`, MLflow 3.17): every image's bytes over many lines. The first message stays."""

        def __setattr__(self, name: str, value: Any) -> None:
            if name != "message" or "message" not in self.__dict__:
                super().__setattr__(name, value)

    class Refusing:
        def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
            try:
                return model.predict(model_input, params)
            except LongtailError as e:
                raise InputRefused(str(e), error_code=INVALID_PARAMETER_VALUE) from None

    return Refusing()


def _longtail_requirement() -> str:
    """longtail as a pip requirement of the model: its python_function flavour is longtail's module."""
    try:
        return f"longtail=={version('longtail')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "longtail"
