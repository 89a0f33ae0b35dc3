"""The files of a model directory (DESIGN.md "Model directory"): named here once, read and written by name elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longtail.atomic_file import write_text
from longtail.errors import DataError

# The Keras model, and exactly the preprocessing predict must apply to it.
MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
# The experiment config it was trained with, and the MLflow run it belongs to (when tracked).
CONFIG_FILE = "config.yaml"
RUN_FILE = "mlflow_run.json"
# Per-epoch training logs and their plot.
HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"
# The post-hoc logit adjustment predict applies (only when evaluate.posthoc_tau is set).
ADJUSTMENT_FILE = "logit_adjustment.json"


def write_json(model_dir: str | Path, name: str, data: Any, *, indent: int = 2) -> Path:
    """Write `data` as JSON to `model_dir/name`, atomically (the folder is created if missing)."""
    path = Path(model_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(data, indent=indent))


def read_json(model_dir: str | Path, name: str) -> Any:
    """The JSON in `model_dir/name`, or None when the model directory has no such file."""
    path = Path(model_dir) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise DataError(f"{path} is corrupt (not JSON: {e}); train the model again or restore the file") from None
