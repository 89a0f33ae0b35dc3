"""What a training reads besides its config: the train/val pair, checked to fit together, and the class weights."""

from __future__ import annotations

import json
from pathlib import Path

from longtail.errors import DataError
from longtail.file_bounds import RECORD_MAX_BYTES, read_bounded
from longtail.preprocessing import Preprocessing
from longtail.splits import SplitInfo, check_disjoint


def load_class_weights(path: str | Path, class_names: list[str]) -> list[float]:
    """Read `{"weights": [...by class index...]}` (as longtail.class_weights writes it).

    Raises:
        DataError: missing file, not a regular file or over file_bounds.RECORD_MAX_BYTES, wrong shape,
            non-positive weights, or other class names.
    """
    path = Path(path)
    text = read_bounded(path, f"class weights file {path}", RECORD_MAX_BYTES, DataError)
    if text is None:
        raise DataError(f"class weights file not found: {path} (write it with `longtail weights`)")
    try:
        data = json.loads(text)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise DataError(f"class weights file {path} is not JSON: {e}") from e
    weights = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(weights, list) or not all(isinstance(w, int | float) for w in weights):
        raise DataError(f"class weights file {path} must hold {{\"weights\": [numbers by class index]}}")
    if len(weights) != len(class_names):
        raise DataError(
            f"class weights file {path} has {len(weights)} weights but the train split has "
            f"{len(class_names)} classes; recompute it with `longtail weights` on this train split"
        )
    names = data.get("class_names")
    if names is not None and list(names) != list(class_names):
        raise DataError(f"class weights file {path} was computed for other classes than the train split")
    if any(w <= 0 for w in weights):
        raise DataError(f"class weights file {path} has a weight <= 0")
    return [float(w) for w in weights]


def check_splits(train: SplitInfo, val: SplitInfo) -> Preprocessing:
    """Refuse a train/val pair that cannot be trained on together.

    Returns:
        The train split's Preprocessing (scale still to be set by the caller's config).

    Raises:
        DataError: empty or unlabelled split, other class names, or ingest settings that differ.
    """
    for info, name in ((train, "train"), (val, "val")):
        if info.n == 0:
            fix = ("re-run ingest with a larger --val-fraction (a class of n images gives round(n x fraction) "
                   "of them to val)" if name == "val" else "re-run ingest on a non-empty source")
            raise DataError(f"the {name} split {info.path} is empty: {fix}")
        if not info.has_labels:
            raise DataError(f"the {name} split {info.path} has no labels (a test split?)")
    if train.class_names != val.class_names:
        missing = sorted(set(train.class_names) ^ set(val.class_names))
        detail = f"classes in only one: {missing[:5]}" if missing else "same classes, other order"
        raise DataError(
            f"val split {val.path} has other class_names than train split {train.path} ({detail}); "
            "ingest both from one source in one `longtail ingest` run"
        )
    present = len(set(train.labels.tolist())) if train.labels is not None else len(train.class_names)
    if min(present, len(train.class_names)) < 2:
        raise DataError(
            f"the train split {train.path} holds one class, and a classifier needs at least two (one class "
            "trains to a meaningless macro-F1 of 1.0); ingest a source with two or more class folders"
        )
    check_disjoint(train, val)
    check_roles(train, val)
    pre = Preprocessing.from_split(train, "scale")
    pre.check_split(val.preprocessing, val.image_size, f"val split {val.path}")
    return pre


def check_roles(train: SplitInfo, val: SplitInfo) -> None:
    """Refuse a val split that carries a train split's mark, or a train split without it: ingest records
    the train pixels' mean (mean_rgb) on train.h5 alone, so either means --train and --val were mixed up.

    Raises:
        DataError: naming the split and the fix.
    """
    fix = "pass --train OUT/train.h5 --val OUT/val.h5 of one `longtail ingest` run"
    if val.mean_rgb is not None:
        swapped = " (the two look swapped)" if train.mean_rgb is None else ""
        raise DataError(f"the val split {val.path} is a train split: it carries the train pixels' mean (mean_rgb), "
                        f"which ingest writes on train.h5 only{swapped}; {fix}")
    if train.mean_rgb is None:
        raise DataError(f"the train split {train.path} has no train pixels' mean (mean_rgb), which ingest writes "
                        f"on every train.h5: is it a val or test split? {fix}")
