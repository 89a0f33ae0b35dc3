"""Class frequency for the long-tail view: each class's scores beside how many train images it had."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longtail.errors import DataError
from longtail.file_bounds import RECORD_MAX_BYTES, read_bounded
from longtail.model_dir import PREPROCESSING_FILE
from longtail.scoring import ClassMetrics

log = logging.getLogger(__name__)


@dataclass
class ClassResult(ClassMetrics):
    """One class's evaluation, with its train frequency for the long-tail view."""

    train_count: int | None




def train_class_counts(
    class_names: list[str],
    extra: dict[str, Any],
    val_support: np.ndarray,
    weights_json: str | Path | None = None,
) -> tuple[np.ndarray, str]:
    """Images per class in the training data, and where that number came from.

    Looks for counts (`class_counts`, or `counts` as `longtail weights` writes them: a list by
    class index, or {name: count}) in preprocessing.json's `extra`, then in `weights_json`.
    Without them it falls back to the val support, which ingest's stratified split keeps
    proportional to train.
    """
    candidates: list[tuple[Any, str]] = [(extra, PREPROCESSING_FILE)]
    if weights_json:
        path = Path(weights_json)
        try:
            text = read_bounded(path, str(path), RECORD_MAX_BYTES, DataError)
            if text is not None:
                candidates.append((json.loads(text), path.name))
        except (DataError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("ignoring unreadable %s: %s", path, e)
    for data, source in candidates:
        if not isinstance(data, dict):
            continue
        if "class_names" in data and data["class_names"] != class_names:
            log.warning("ignoring class counts in %s: its class_names differ from the model's", source)
            continue
        for key in ("class_counts", "counts"):
            counts = _counts_by_index(data.get(key), class_names)
            if counts is not None:
                return counts, f"train images per class ({source})"
    return np.asarray(val_support, dtype=np.int64), "val images per class (stratified like train)"


def _counts_by_index(value: Any, class_names: list[str]) -> np.ndarray | None:
    if isinstance(value, dict) and all(n in value for n in class_names):
        return np.asarray([int(value[n]) for n in class_names], dtype=np.int64)
    if isinstance(value, list) and len(value) == len(class_names):
        return np.asarray([int(v) for v in value], dtype=np.int64)
    return None
