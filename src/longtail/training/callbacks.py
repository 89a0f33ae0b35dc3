"""The Keras callbacks of a training: epoch timing, val figures, loss guard, history, progress, checkpoint.

Importing this module imports keras (every class here is a keras.callbacks.Callback), so
longtail.training.fit imports it where it imports keras: inside the fit, and `import
longtail.training` stays free of TensorFlow.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from longtail.atomic_file import write_text
from longtail.disk_full import check_room, disk_full_as_one_line
from longtail.errors import LongtailError
from longtail.file_bounds import RECORD_MAX_BYTES, read_bounded
from longtail.run_log import format_epoch_line
from longtail.scoring import macro_f1
from longtail.softmax import softmax
from longtail.tracking.names import VAL_ACCURACY, VAL_LOSS, VAL_MACRO_F1, VAL_MACRO_F1_PLAIN


class EpochTimer(keras.callbacks.Callback):
    """Times each epoch's training phase (before validation): wall `.seconds`, for images/s, and
    `.cpu_seconds`, the process's CPU time (every thread), which a shared machine's load moves less."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._start = self._cpu_start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)


class EpochProgress(keras.callbacks.Callback):
    """Prints one line per epoch (loss, val macro-F1, s/epoch, ETA), flushed at once.

    `longtail run` shows these lines while every other line of the train step goes to the log file;
    the format lives in longtail.run_log. Place it after ValMetrics, whose figures it prints.
    """

    def __init__(self, name: str, epochs: int) -> None:
        super().__init__()
        self._name, self._epochs = name, epochs
        self._start = 0.0
        self._first: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._first is None:
            self._first, self._start = epoch, time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        epochs = self._epochs
        per_epoch = (time.perf_counter() - self._start) / (epoch + 1 - (self._first or 0))
        f1 = logs.get(VAL_MACRO_F1)
        print(format_epoch_line(self._name, epoch + 1, epochs, float(logs.get("loss", float("nan"))),
                                None if f1 is None else float(f1), per_epoch,
                                per_epoch * (epochs - epoch - 1)), flush=True)


class ValMetrics(keras.callbacks.Callback):
    """Computes val loss, accuracy and macro-F1 (the leaderboard metric) once per epoch.

    One prediction pass over the val split gives them all; they are added to the epoch's logs as
    val_loss (plain cross-entropy: no smoothing, no class weights), val_accuracy, val_macro_f1
    (under `target_prior`, the figure that picks the best epoch) and val_macro_f1_plain (the val
    split as drawn, for reference). Macro-F1 is longtail.scoring's.
    """

    def __init__(self, model_inputs: Any, labels: np.ndarray, target_prior: str) -> None:
        super().__init__()
        self._inputs, self._labels, self._target_prior = model_inputs, labels, target_prior

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        labels = self._labels
        probs = softmax(self.model.predict(self._inputs, verbose=0))
        pred = probs.argmax(axis=1)
        p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
        if logs is not None:
            n_classes = probs.shape[1]
            logs[VAL_LOSS] = float(-np.log(p_true).mean())
            logs[VAL_ACCURACY] = float((pred == labels).mean())
            logs[VAL_MACRO_F1] = macro_f1(labels, pred, n_classes, target_prior=self._target_prior)
            logs[VAL_MACRO_F1_PLAIN] = macro_f1(labels, pred, n_classes, target_prior="train")


class EmaSwap(keras.callbacks.SwapEMAWeights):
    """Swaps the model's weights with the optimizer's moving averages (train.optimizer.ema) at each epoch end.

    Two of them bracket ValMetrics: the first puts the averages in, so the epoch's val figures (and
    the best epoch) are the averaged model's, the second puts the trained weights back before the
    backup is written, so a resumed training continues exactly. At the end of the fit Keras copies
    the averages into the model (Optimizer.finalize_variable_values): the saved model is the average.
    """

    def __init__(self) -> None:
        super().__init__(swap_on_epoch=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._swap_variables()

    # Keras' own swaps around evaluate/predict: the fit has no validation_data, and ValMetrics'
    # predict runs its own callbacks, so none of these fire; they stay off so nothing swaps twice.
    def on_test_begin(self, logs: dict | None = None) -> None:
        pass

    def on_test_end(self, logs: dict | None = None) -> None:
        pass

    def on_predict_begin(self, logs: dict | None = None) -> None:
        pass

    def on_predict_end(self, logs: dict | None = None) -> None:
        pass


class FiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the end of an epoch whose loss is NaN or infinite.

    Keras trains on through NaNs and saves the model; the error raised here fails the run instead
    (train() marks the MLflow run FAILED and writes no model).
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise LongtailError(
                f"training diverged: the loss is {float(loss)} after epoch {epoch + 1}; no model was saved. "
                "Lower train.lr.initial (or the schedule's values), or check the class weights and the data"
            )


class PersistentHistory(keras.callbacks.Callback):
    """Keeps every epoch's logs in `path` (JSON), across restarts.

    At each epoch start it drops entries from that epoch on, so an epoch that was logged but not
    checkpointed before a crash is replaced, not duplicated.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        text = read_bounded(path, str(path), RECORD_MAX_BYTES, LongtailError)
        self.history: dict[str, list[float]] = json.loads(text) if text is not None else {}
        self.first_epoch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch
        self.history = {k: v[:epoch] for k, v in self.history.items()}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        write_text(self._path, json.dumps(self.history))  # a kill mid-write must not lose the resume state


class CheckpointBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore into `backup_dir`, keeping the previous epoch's state beside the latest
    (its `.bkp` files, which training.resume falls back to when the latest does not read whole).

    Keras writes the checkpoint in place, so a full disk midway would leave it truncated: each save first
    checks the disk has room for it (disk_full.check_room), and a full disk is one line.
    """

    def __init__(self, backup_dir: Path) -> None:
        super().__init__(str(backup_dir), double_checkpoint=True, delete_checkpoint=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        weights = Path(self._weights_path)
        check_room(weights, self._save_needs(weights))
        with disk_full_as_one_line(weights):
            super().on_epoch_end(epoch, logs)

    def _save_needs(self, weights: Path) -> int:
        """Bytes a save adds on disk at its peak: the latest copied over the previous (`.bkp`), then the
        latest rewritten with the model's and optimizer's variables."""
        variables = [*self.model.weights, *(self.model.optimizer.variables if self.model.optimizer else [])]
        state = sum(int(np.prod(v.shape)) * _itemsize(v.dtype) for v in variables)
        latest = weights.stat().st_size if weights.is_file() else 0
        previous = Path(self._prev_weights_path)
        return max(0, max(latest, state) - (previous.stat().st_size if previous.is_file() else 0))


def _itemsize(dtype: Any) -> int:
    try:
        return np.dtype(str(dtype)).itemsize
    except TypeError:  # a dtype numpy does not name (bfloat16): a float32's size bounds it
        return 4
