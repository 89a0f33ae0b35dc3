"""Batched prediction through a model directory's own preprocessing, and the submission CSV it writes."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longtail.errors import DataError, LongtailError
from longtail.logit_adjustment import LogitAdjustment
from longtail.model_dir import PREPROCESSING_FILE, ModelDir
from longtail.preprocessing import Preprocessing
from longtail.softmax import softmax
from longtail.splits import SplitInfo, image_batches, read_ids, read_info
from longtail.storage import check_output_file
from longtail.submission import submission_id, write_submission
from longtail.tracking.model_runs import log_prediction, log_test_dataset
from longtail.tracking.names import SUBMISSION_ARTIFACT_FILE
from longtail.tracking.store import check_tracking_reachable

log = logging.getLogger(__name__)


@dataclass
class PredictionResult:
    """A written submission."""

    path: Path
    n_rows: int
    tta: bool
    predicted_counts: dict[str, int] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    tta_shift: float = 0.0


def tta_text(tta: bool, shift: float) -> str:
    """How test-time augmentation averaged each prediction, in words ("" for none)."""
    parts = (["flip"] if tta else []) + ([f"{shift * 100:g}% shift"] if shift else [])
    return " + ".join(parts) + " TTA" if parts else ""


def shift_pixels(shift: float, side: int) -> int:
    """TTA's shift in pixels for images of `side` px: round(shift * side), at least 1 when shift > 0.

    The shift is a fraction of the side, as train.augmentation.shift is, so one config means the same
    move on 28 px and on 224 px images (0.07: 2 px at 28, 16 px at 224).
    """
    return max(1, round(shift * side)) if shift > 0 else 0


def tta_views(x: np.ndarray, *, flip: bool, shift: int) -> Iterator[np.ndarray]:
    """The views of a float batch (B, H, W, C) whose softmax outputs TTA averages.

    The batch itself; its left-right mirror when `flip`; and when `shift` > 0, the batch moved
    `shift` pixels right, left, down and up, each with its mirror when `flip`. The pixels a shift
    uncovers are zeros of the model's input, as the train-time shift pads (augmentation.shift_crop).
    """
    yield x
    if flip:
        yield x[:, :, ::-1]
    if shift <= 0:
        return
    for dy, dx in ((0, shift), (0, -shift), (shift, 0), (-shift, 0)):
        moved = _shifted(x, dy, dx)
        yield moved
        if flip:
            yield moved[:, :, ::-1]


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """x (B, H, W, C) moved dy pixels down and dx right, zeros where nothing moved in."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[:, max(-dy, 0):h - max(dy, 0),
                                                                      max(-dx, 0):w - max(dx, 0)]
    return out


def open_split_for_model(model_dir: ModelDir, split_h5: str | Path) -> tuple[Preprocessing, SplitInfo]:
    """The model's preprocessing and a split it may be applied to.

    This is the one place a split meets a model: the split must have been ingested exactly like
    the training data (size, resize, CLAHE, white balance), and a labelled split must use the
    model's class names in the model's order, or its label indices would mean other classes.

    Raises:
        DataError: naming the setting or class names that differ, and how to fix it.
    """
    preprocessing = model_dir.preprocessing()
    info = read_info(split_h5)
    preprocessing.check_split(info.preprocessing, info.image_size, Path(split_h5).name)
    if info.has_labels and info.class_names != preprocessing.class_names:
        only_model = sorted(set(preprocessing.class_names) - set(info.class_names))
        only_split = sorted(set(info.class_names) - set(preprocessing.class_names))
        detail = (
            f"model-only classes {only_model[:5]}, split-only classes {only_split[:5]}"
            if only_model or only_split
            else "same classes in a different order"
        )
        raise DataError(
            f"{Path(split_h5).name} labels {len(info.class_names)} classes, the model predicts "
            f"{len(preprocessing.class_names)} ({detail}). Evaluate on a val split from the same ingest as the training data."
        )
    return preprocessing, info


@dataclass(frozen=True)
class ModelOnSplit:
    """A model directory opened for a split it was checked against (open_for_split): what predicts that split."""

    directory: ModelDir
    split: SplitInfo
    preprocessing: Preprocessing
    model: Any
    adjustment: LogitAdjustment | None

    def probabilities(self, *, batch_size: int = 256, tta: bool = False, tta_shift: float = 0.0) -> np.ndarray:
        """Class probabilities (N, C) for every row of the split, through the model's preprocessing and
        post-hoc adjustment (predict_probabilities)."""
        return predict_probabilities(self.model, self.preprocessing, self.split.path, batch_size=batch_size, tta=tta,
                                     adjustment=self.adjustment, tta_shift=tta_shift)


def open_for_split(model_dir: ModelDir, split_h5: str | Path, *, labelled: bool = False) -> ModelOnSplit:
    """Open a model for one split, as predict and evaluate both do: check the split against the model
    (open_split_for_model), then load the model and its post-hoc adjustment.

    Args:
        labelled: refuse a split without labels (evaluate scores against them) before loading the model.

    Raises:
        DataError: the split does not match the model, has no labels when `labelled`, or a model file is
            missing or damaged.
    """
    preprocessing, info = open_split_for_model(model_dir, split_h5)
    if labelled and (not info.has_labels or info.labels is None):
        raise DataError(
            f"{Path(split_h5).name} has no labels: evaluate needs a labelled split (val.h5 from ingest); "
            "use `longtail predict` for an unlabelled test split"
        )
    return ModelOnSplit(model_dir, info, preprocessing, model_dir.load_model(), model_dir.adjustment())


def predict_probabilities(
    model: Any,
    preprocessing: Preprocessing,
    split_h5: str | Path,
    *,
    batch_size: int = 256,
    tta: bool = False,
    adjustment: LogitAdjustment | None = None,
    tta_shift: float = 0.0,
) -> np.ndarray:
    """Class probabilities (N, C) for every row of a split, read and predicted batch by batch.

    Args:
        model: a Keras model taking float32 (B, H, W, 3) made by `preprocessing.to_float`.
        tta: also predict each image flipped left-right and average the two softmax outputs.
        adjustment: post-hoc logit adjustment to apply (the model directory's, ModelDir.adjustment).
        tta_shift: also predict each image (and its mirror, with `tta`) moved this fraction of its
            side (shift_pixels) right, left, down and up, and average every view's softmax (tta_views).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    check_prediction(preprocessing, adjustment, tta_shift)
    chunks = [predict_batch(model, preprocessing, batch, tta=tta, adjustment=adjustment, tta_shift=tta_shift,
                            source=Path(split_h5).name)
              for batch in image_batches(split_h5, batch_size)]
    if not chunks:
        return np.zeros((0, len(preprocessing.class_names)), dtype=np.float32)
    return np.concatenate(chunks)


def check_prediction(preprocessing: Preprocessing, adjustment: LogitAdjustment | None, tta_shift: float) -> None:
    """Refuse a shift outside its bounds, or an adjustment for another number of classes, before any image is read.

    Raises:
        DataError: naming the value and its bounds, or the model directory to re-train.
    """
    if not 0 <= tta_shift < 0.5:
        raise DataError(f"tta_shift is a fraction of the image side, >= 0 and < 0.5, got {tta_shift}")
    n_classes = len(preprocessing.class_names)
    if adjustment is not None and len(adjustment.log_prior) != n_classes:
        raise DataError(
            f"the logit adjustment has {len(adjustment.log_prior)} classes but {PREPROCESSING_FILE} names "
            f"{n_classes}: the model directory is inconsistent, re-run training"
        )


def predict_batch(model: Any, preprocessing: Preprocessing, batch: np.ndarray, *, tta: bool = False,
                  adjustment: LogitAdjustment | None = None, tta_shift: float = 0.0,
                  source: str = "the images") -> np.ndarray:
    """Class probabilities (B, C) of one batch of stored pixels, uint8 (B, H, W, 3): what `longtail predict`
    computes for each batch of a split, and the served model (served_model.py) for a request's images.

    Args:
        tta, adjustment, tta_shift: as predict_probabilities (checked first with check_prediction).
        source: what the batch came from, for the error message.
    """
    shift = shift_pixels(tta_shift, min(batch.shape[1:3]))
    if shift and 2 * shift >= min(batch.shape[1:3]):
        raise DataError(f"tta_shift {tta_shift} ({shift} px) would move {source}'s "
                        f"{batch.shape[1]}x{batch.shape[2]} images out of sight: use less than half their side")
    views = [_predict_batch(model, view) for view in tta_views(preprocessing.to_float(batch), flip=tta, shift=shift)]
    probs = views[0] if len(views) == 1 else np.mean(views, axis=0, dtype=np.float32)
    n_classes = len(preprocessing.class_names)
    if probs.shape[1] != n_classes:
        raise DataError(
            f"the model outputs {probs.shape[1]} classes but {PREPROCESSING_FILE} names {n_classes}: "
            "the model directory is inconsistent, re-run training"
        )
    return adjustment.apply(probs) if adjustment is not None else probs


def _predict_batch(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities of one batch: the softmax of the model's logits, in float32."""
    return softmax(np.asarray(model.predict_on_batch(np.ascontiguousarray(x))), np.float32)


def predict(
    model_dir: str | Path | ModelDir,
    test_h5: str | Path,
    submission_csv: str | Path,
    *,
    tta: bool = False,
    id_column: str = "id",
    label_column: str = "label",
    batch_size: int = 256,
    tracking_uri: str | None = None,
    tta_shift: float = 0.0,
) -> PredictionResult:
    """Predict every image of a split and write the submission CSV.

    The preprocessing and any post-hoc logit adjustment (`evaluate.posthoc_tau`) are read from the
    model directory; the preprocessing is checked against the split, so no
    caller can pass (or forget) scaling, mean subtraction, CLAHE or a size: docs/seed-log.md "EXP8"'s
    "need to modify preprocessors for predict_v2.py!" cannot happen.

    Args:
        model_dir: its path, or a ModelDir already opened (what it has read is not read again).
        test_h5: any split (labelled or not); its `ids` become submission ids without folders
            or extension ("test/00042.png" -> "00042").
        tracking_uri: overrides the MLflow URI stored in the model directory.
        tta, tta_shift: test-time augmentation, as predict_probabilities.

    Returns:
        The CSV path (rows sorted by id, written atomically), its row count and the predicted
        class distribution; the CSV is logged to the model's MLflow run under `submission/`.
    """
    check_output_file(submission_csv, "submission CSV")  # before minutes of prediction, not after
    directory = model_dir if isinstance(model_dir, ModelDir) else ModelDir(model_dir)
    run = directory.run_info()
    if run is not None:  # a dead tracking server stops predict before it writes anything
        check_tracking_reachable(tracking_uri or run.tracking_uri)
    opened = open_for_split(directory, test_h5)
    info, adjustment = opened.split, opened.adjustment
    ids = [submission_id(i) for i in read_ids(test_h5)]
    probs = opened.probabilities(batch_size=batch_size, tta=tta, tta_shift=tta_shift)
    names = [opened.preprocessing.class_names[i] for i in probs.argmax(axis=1)]
    path = write_submission(submission_csv, ids, names, id_column=id_column, label_column=label_column)
    counts = dict(sorted(Counter(names).items()))
    augmented = tta_text(tta, tta_shift)
    log.info("wrote %d predictions for %s to %s%s", len(ids), info.path.name, path, f" ({augmented})" if augmented else "")
    with tempfile.TemporaryDirectory() as tmp:
        # A KFP output path has no extension; in MLflow the file is always submission/<name>.csv.
        logged = path if path.suffix == ".csv" else Path(shutil.copyfile(path, Path(tmp) / SUBMISSION_ARTIFACT_FILE))
        try:
            run_id = log_prediction(run, logged, rows=len(ids), tta=tta, tta_shift=tta_shift, split=info.path.name,
                                    posthoc_tau=adjustment.tau if adjustment else 0.0, tracking_uri=tracking_uri)
        except LongtailError as e:
            raise LongtailError(f"wrote {len(ids)} rows to {path}, but did not log them to MLflow: {e}") from None
    return PredictionResult(path=path, n_rows=len(ids), tta=tta, predicted_counts=counts, mlflow_run_id=run_id,
                            tta_shift=tta_shift)


def predict_submission(model_dir: str | Path, test_h5: str | Path, submission_csv: str | Path, *, tta: bool = False,
                       tracking_uri: str | None = None, tta_shift: float = 0.0) -> PredictionResult:
    """The pipeline's submission: `predict`, then the test split recorded as a dataset input of the model's run.

    The model directory is opened once for both: each of its files is read once.
    """
    directory = ModelDir(model_dir)
    result = predict(directory, test_h5, submission_csv, tta=tta, tracking_uri=tracking_uri, tta_shift=tta_shift)
    log_test_dataset(directory.run_info(), test_h5, n_classes=len(directory.preprocessing().class_names),
                     tracking_uri=tracking_uri)
    return result
