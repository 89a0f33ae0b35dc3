"""Train one experiment: HDF5 splits in, a model directory (and one MLflow run) out.

`train.batch_size` is the batch per replica (per GPU); the global batch, the one each optimizer
step averages over, is batch_size x replicas, as in the log's 2-GPU runs. The learning rate is
not rescaled with the replica count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longtail.atomic_file import write_text
from longtail.config import (
    ExperimentConfig,
    LabelSmoothingConfig,
    OptimizerConfig,
    TrainConfig,
    config_to_dict,
    flatten,
    save_config,
)
from longtail.errors import ConfigError, DataError, LongtailError, StorageError
from longtail.model_dir import CONFIG_FILE, CURVES_FILE, HISTORY_FILE, MODEL_FILE
from longtail.output_lock import output_lock
from longtail.preprocessing import Preprocessing
from longtail.splits import SplitInfo, check_disjoint, read_info
from longtail.tracking.names import VAL_ACCURACY, VAL_LOSS, VAL_MACRO_F1, VAL_MACRO_F1_PLAIN

log = logging.getLogger(__name__)

# Files training keeps in the checkpoint directory, next to Keras' BackupAndRestore state.
RESUME_FILE = "resume.json"
BACKUP_SUBDIR = "backup"
# What keras.callbacks.BackupAndRestore (Keras 3) writes into BACKUP_SUBDIR: the only files there
# that training may remove. Anything else in a --checkpoint-dir is someone else's.
KERAS_BACKUP_FILES = ("latest.weights.h5", "training_metadata.json", "latest.weights.h5.bkp",
                      "training_metadata.json.bkp")


@dataclass
class TrainResult:
    """What one training produced.

    images_per_second: training phase only (no validation), median over epochs after the first.
    global_batch_size: train.batch_size (per replica) x replicas.
    resumed_from_epoch: the epoch training started at (0 unless resumed from a checkpoint).
    """

    model_dir: Path
    run_id: str | None
    epochs_run: int
    best_val_macro_f1: float
    final_val_macro_f1: float
    history: dict[str, list[float]]
    images_per_second: float
    seconds: float
    replicas: int = 1
    global_batch_size: int = 0
    steps_per_epoch: int = 0
    resumed_from_epoch: int = 0
    posthoc_tau: float = 0.0


def load_class_weights(path: str | Path, class_names: list[str]) -> list[float]:
    """Read `{"weights": [...by class index...]}` (as longtail.class_weights writes it).

    Raises:
        DataError: missing file, wrong shape, non-positive weights, or other class names.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class weights file not found: {path} (write it with `longtail weights`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
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
            raise DataError(f"the {name} split {info.path} is empty: re-run ingest on a non-empty source")
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
    pre = Preprocessing.from_split(train, "scale")
    pre.check_split(val.preprocessing, val.image_size, f"val split {val.path}")
    return pre


def target_encoding(ls: LabelSmoothingConfig, mixing: bool = False) -> tuple[bool, float]:
    """(one_hot, smoothing applied to the targets) for a label smoothing config; mixup/cutmix need one-hot."""
    if ls.factor == 0:
        return mixing, 0.0
    return True, ls.factor if ls.mode == "labels" else 0.0


def make_loss(t: TrainConfig, class_counts: Sequence[int]) -> Any:
    """The keras loss of `train.loss` (longtail.losses) on logits, for targets as target_encoding makes them.

    Label smoothing mode loss smooths inside the loss, mode labels in the data; both modes give the
    same value on the same batch. Class weights arrive as sample weights from the data.
    """
    from longtail.losses import build_loss, keras_loss

    ls = t.label_smoothing
    loss_fn = build_loss(t.loss.name, class_counts, **t.loss.args)
    return keras_loss(loss_fn, len(class_counts), ls.factor if ls.mode == "loss" else 0.0)


def make_accuracy(ls: LabelSmoothingConfig, mixing: bool = False) -> Any:
    """Train accuracy named 'accuracy' whatever the target encoding (history.json reads it by name)."""
    import keras

    if not target_encoding(ls, mixing)[0]:
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    return keras.metrics.CategoricalAccuracy(name="accuracy")


def make_optimizer(opt: OptimizerConfig, learning_rate: float) -> Any:
    """SGD (momentum, nesterov) or Adam, with decoupled weight decay when > 0."""
    import keras

    wd = opt.weight_decay or None
    if opt.name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=opt.momentum,
                                    nesterov=opt.nesterov, weight_decay=wd)
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=wd)
    raise ConfigError(f"config field train.optimizer.name must be sgd or adam, got {opt.name!r}")


def distribution_strategy(gpus: int, devices: Sequence[str] | None = None) -> Any:
    """MirroredStrategy over the visible GPUs (the first `gpus` of them when > 0).

    Args:
        gpus: train.gpus; 0 means every visible GPU.
        devices: explicit device names (e.g. two logical CPUs in tests); overrides `gpus`.

    Returns:
        A tf.distribute strategy; the default (single-device) one when there is no GPU.
    """
    import tensorflow as tf

    if devices:
        return tf.distribute.MirroredStrategy(list(devices))
    visible = [d.name for d in tf.config.list_logical_devices("GPU")]
    if gpus > len(visible):
        log.warning("train.gpus is %d but %d GPU(s) are visible: using %d", gpus, len(visible), len(visible))
    chosen = visible[:gpus] if gpus else visible
    if not chosen:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(chosen)


def epoch_timer() -> Any:
    """A callback timing each epoch's training phase (before validation), for images/s; see `.seconds`."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def epoch_progress(name: str, epochs: int) -> Any:
    """A callback printing one line per epoch (loss, val macro-F1, s/epoch, ETA), flushed at once.

    `longtail run` shows these lines while every other line of the train step goes to the log file;
    the format lives in longtail.run_log. Place it after macro_f1_callback, whose figures it prints.
    """
    import keras

    from longtail.run_log import format_epoch_line

    class EpochProgress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._start = 0.0
            self._first: int | None = None

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if self._first is None:
                self._first, self._start = epoch, time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            per_epoch = (time.perf_counter() - self._start) / (epoch + 1 - (self._first or 0))
            f1 = logs.get(VAL_MACRO_F1)
            print(format_epoch_line(name, epoch + 1, epochs, float(logs.get("loss", float("nan"))),
                                    None if f1 is None else float(f1), per_epoch,
                                    per_epoch * (epochs - epoch - 1)), flush=True)

    return EpochProgress()


def macro_f1_callback(model_inputs: Any, labels: np.ndarray, target_prior: str) -> Any:
    """A callback computing val loss, accuracy and macro-F1 (the leaderboard metric) once per epoch.

    One prediction pass over the val split gives them all; they are added to the epoch's logs as
    val_loss (plain cross-entropy: no smoothing, no class weights), val_accuracy, val_macro_f1
    (under `target_prior`, the figure that picks the best epoch) and val_macro_f1_plain (the val
    split as drawn, for reference).
    """
    import keras

    from longtail.scoring import macro_f1

    class MacroF1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            probs = softmax(self.model.predict(model_inputs, verbose=0))
            pred = probs.argmax(axis=1)
            p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
            if logs is not None:
                n_classes = probs.shape[1]
                logs[VAL_LOSS] = float(-np.log(p_true).mean())
                logs[VAL_ACCURACY] = float((pred == labels).mean())
                logs[VAL_MACRO_F1] = macro_f1(labels, pred, n_classes, target_prior=target_prior)
                logs[VAL_MACRO_F1_PLAIN] = macro_f1(labels, pred, n_classes, target_prior="train")

    return MacroF1()


def finite_loss_guard() -> Any:
    """A callback that stops training at the end of an epoch whose loss is NaN or infinite.

    Keras trains on through NaNs and saves the model; the error raised here fails the run instead
    (train() marks the MLflow run FAILED and writes no model).
    """
    import keras

    class FiniteLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise LongtailError(
                    f"training diverged: the loss is {float(loss)} after epoch {epoch + 1}; no model was saved. "
                    "Lower train.lr.initial (or the schedule's values), or check the class weights and the data"
                )

    return FiniteLoss()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the models output logits)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def history_callback(path: Path) -> Any:
    """A callback keeping every epoch's logs in `path` (JSON), across restarts.

    At each epoch start it drops entries from that epoch on, so an epoch that was logged but not
    checkpointed before a crash is replaced, not duplicated.
    """
    import keras

    class PersistentHistory(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.history: dict[str, list[float]] = json.loads(path.read_text()) if path.is_file() else {}
            self.first_epoch: int | None = None

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if self.first_epoch is None:
                self.first_epoch = epoch
            self.history = {k: v[:epoch] for k, v in self.history.items()}

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            for k, v in (logs or {}).items():
                self.history.setdefault(k, []).append(float(v))
            write_text(path, json.dumps(self.history))  # a kill mid-write must not lose the resume state

    return PersistentHistory()


def config_fingerprint(config: ExperimentConfig, train: SplitInfo, val: SplitInfo) -> str:
    """What a checkpoint must match to be resumed: the resolved config and both splits."""
    text = json.dumps([config_to_dict(config), train.source_fingerprint, train.n, val.n], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_resume(checkpoint_dir: Path, fingerprint: str, config: ExperimentConfig | None = None,
                 fresh: bool = False) -> dict[str, Any]:
    """The resume state to continue from, or {} to start afresh.

    State without a finished epoch (a run that failed while starting) resumes nothing, so it is
    discarded whatever config wrote it. State with epochs from another config or data is kept, and
    the error says how to go on: the original config resumes it, `fresh` discards it.
    """
    path = checkpoint_dir / RESUME_FILE
    if not path.is_file():
        foreign = [p.relative_to(checkpoint_dir).as_posix() for p in _checkpoint_files(checkpoint_dir) if p.exists()]
        if foreign:  # training would overwrite, then delete, files it has no record of writing
            raise StorageError(
                f"checkpoint directory {checkpoint_dir} holds {', '.join(foreign)} but no {RESUME_FILE}: "
                "longtail did not write them; pass an empty or new --checkpoint-dir"
            )
        return {}
    try:
        state = json.loads(path.read_text())
    except ValueError:
        state = {}
    if state.get("fingerprint") == fingerprint and not fresh:
        return state
    epochs = _epochs_done(checkpoint_dir)
    if fresh or epochs == 0:
        log.info("discarding the resume state in %s (%s)", checkpoint_dir,
                 "--fresh" if fresh else "no finished epoch to resume")
        _remove_checkpoints(checkpoint_dir)
        return {}
    changed = _changed_fields(state.get("config") or {}, config)
    what = f"config ({changed})" if changed else "config or data"
    raise ConfigError(
        f"checkpoint directory {checkpoint_dir} holds {epochs} finished epochs of a training with another {what}; "
        "to resume it, run again with that config and those splits; to start afresh, pass --fresh "
        "(or another --checkpoint-dir)"
    )


def _epochs_done(checkpoint_dir: Path) -> int:
    """Finished epochs saved in a checkpoint directory (0 when Keras saved no state to restore)."""
    backup = checkpoint_dir / BACKUP_SUBDIR
    if not backup.is_dir() or not any(backup.iterdir()):
        return 0
    try:
        history = json.loads((checkpoint_dir / HISTORY_FILE).read_text())
    except (OSError, ValueError):
        return 1
    return max([len(v) for v in history.values()] or [1])


def _flat_config(config: ExperimentConfig) -> dict[str, str]:
    """Every config field as 'section.field' -> str(value): what resume.json keeps to name a change."""
    return {k: str(v) for k, v in flatten(config_to_dict(config)).items()}


def _changed_fields(saved: dict[str, Any], config: ExperimentConfig | None, limit: int = 3) -> str:
    """'train.epochs 3 -> 5, ...': the flat config fields that differ from the saved ones."""
    if config is None or not saved:
        return ""
    now = _flat_config(config)
    keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    shown = ", ".join(f"{k} {saved.get(k, '-')} -> {now.get(k, '-')}" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def train(
    config: ExperimentConfig,
    train_h5: str | Path,
    val_h5: str | Path,
    out_dir: str | Path,
    *,
    weights_json: str | Path | None = None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    devices: Sequence[str] | None = None,
    extra_callbacks: Sequence[Any] = (),
    fresh: bool = False,
    task_run_id: str | None = None,
    system_metrics: bool = True,
    source: str = "longtail train",
) -> TrainResult:
    """Train `config` on the train split, validating macro-F1 on the val split every epoch.

    A training whose checkpoint directory holds state (from a killed run of the same config and
    data) resumes at the epoch it reached, in the same MLflow run.

    Args:
        weights_json: class weights by index (`longtail weights`); None trains unweighted.
        tracking_uri: MLflow tracking URI; None trains without tracking.
        parent_run_id: nest the run under this one (a sweep).
        checkpoint_dir: where per-epoch state lives (default out_dir/checkpoints); removed on success.
        progress: Keras progress output (a bar on a terminal, one line per epoch otherwise).
        devices: explicit devices for MirroredStrategy (tests); default: train.gpus GPUs.
        extra_callbacks: more Keras callbacks, run after checkpointing (e.g. fault injection in tests).
        fresh: discard resume state of another config or data instead of refusing it.
        task_run_id: the MLflow run an orchestrator opened for this task (KFP's MLFLOW_RUN_ID); the
            training's run nests under it when there is no `parent_run_id`.
        system_metrics: log CPU/memory (and GPU) metrics to the run while training.
        source: what started the training (the run's mlflow.source.name).

    Returns:
        TrainResult; out_dir holds model.keras, preprocessing.json, config.yaml, history.json,
        curves.png and, when tracked, mlflow_run.json.

    Raises:
        DataError: splits or weights that do not fit together.
        LongtailError: the tracking server is unreachable (checked before training starts).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    train_info, val_info = read_info(train_h5), read_info(val_h5)
    if config.preprocess.scale == "mean_subtraction" and train_info.mean_rgb is None:
        raise DataError(
            f"preprocess.scale is mean_subtraction but train split {train_info.path} has no mean_rgb; "
            "re-ingest it or set preprocess.scale=scale"
        )
    preprocessing = dataclasses.replace(check_splits(train_info, val_info), scale=config.preprocess.scale)
    class_weights = load_class_weights(weights_json, train_info.class_names) if weights_json else None
    if class_weights is None and config.weights.scheme != "none":
        log.warning("weights.scheme is %s but no weights file was given: training unweighted",
                    config.weights.scheme)

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    fingerprint = config_fingerprint(config, train_info, val_info)
    # One training per model directory and per checkpoint directory: a second one would resume
    # (and then fail) the first's live run.
    with output_lock(out_dir, "model directory"), _locked_checkpoints(checkpoint_dir):
        resume = _read_resume(checkpoint_dir, fingerprint, config, fresh)

        run = None
        if tracking_uri:
            from longtail.tracking.runs import log_training_facts, start_experiment_run

            run, resumed = start_experiment_run(tracking_uri, config, source=source, parent_run_id=parent_run_id,
                                                resume_run_id=resume.get("run_id"), task_run_id=task_run_id)
            if not resumed:
                log_training_facts(run, config, train_info, val_info, class_weights)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        write_text(checkpoint_dir / RESUME_FILE, json.dumps(
            {"fingerprint": fingerprint, "run_id": run.run_id if run else None,
             "config": _flat_config(config)}))

        monitor = None
        try:
            monitor = _start_mlflow_extras(run, resume, train_h5, val_h5, system_metrics)
            result = _fit(config, train_info, val_info, preprocessing, class_weights, out_dir, checkpoint_dir,
                          run, progress, devices, extra_callbacks)
        except BaseException:
            if run is not None:
                _stop_monitor(monitor)
                run.finish("FAILED")
            if _epochs_done(checkpoint_dir) == 0:  # nothing to resume: a corrected re-run starts clean
                _remove_checkpoints(checkpoint_dir)
            raise
        result.seconds = time.perf_counter() - started
        _remove_checkpoints(checkpoint_dir)
        if run is not None:
            _stop_monitor(monitor)
            run.finish("FINISHED")
        return result


# --- MLflow extras: dataset inputs and system metrics (longtail.tracking.runs) ---

def _start_mlflow_extras(run: Any, resume: dict[str, Any], train_h5: str | Path, val_h5: str | Path,
                         system_metrics: bool) -> Any:
    """Log the splits as dataset inputs (new runs only) and start the system-metrics monitor."""
    if run is None:
        return None
    from longtail.tracking.inputs import split_dataset

    resumed = bool(resume.get("run_id")) and resume.get("run_id") == run.run_id
    if not resumed:
        run.log_datasets([split_dataset(train_h5, "train"), split_dataset(val_h5, "val")])
    return run.system_metrics(system_metrics, resumed=resumed)


def _stop_monitor(monitor: Any) -> None:
    if monitor is not None:
        monitor.finish()


def _fit(
    config: ExperimentConfig,
    train_info: SplitInfo,
    val_info: SplitInfo,
    preprocessing: Preprocessing,
    class_weights: list[float] | None,
    out_dir: Path,
    checkpoint_dir: Path,
    run: Any,
    progress: bool,
    devices: Sequence[str] | None,
    extra_callbacks: Sequence[Any],
) -> TrainResult:
    import keras
    import tensorflow as tf

    from longtail.input_pipeline import Augmentation, Mixing, make_dataset
    from longtail.models import build_model
    from longtail.schedules import initial_learning_rate, schedule_callback

    t = config.train
    keras.utils.set_random_seed(t.seed)
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = distribution_strategy(t.gpus, devices)
    replicas = int(strategy.num_replicas_in_sync)
    global_batch = t.batch_size * replicas
    on_gpu = bool(tf.config.list_logical_devices("GPU")) and not devices
    if t.mixed_precision and not on_gpu:
        log.info("train.mixed_precision ignored: no GPU")
    previous_policy = keras.config.dtype_policy()
    if t.mixed_precision and on_gpu:
        keras.config.set_dtype_policy("mixed_float16")

    mixing = Mixing.from_config(t.augmentation, t.epochs)
    one_hot, smoothing = target_encoding(t.label_smoothing, mixing.active)
    train_data = make_dataset(
        train_info.path, preprocessing, batch_size=global_batch, training=True,
        augmentation=Augmentation.from_config(t.augmentation), one_hot=one_hot, smoothing=smoothing,
        class_weights=class_weights, seed=t.seed, memory_budget_mb=t.memory_budget_mb,
        weights_start_epoch=config.weights.start_epoch, mixing=mixing,
    )
    val_data = make_dataset(val_info.path, preprocessing, batch_size=global_batch, training=False,
                            memory_budget_mb=t.memory_budget_mb, with_labels=False)
    log.info("train %d rows (%s), val %d rows; %d replica(s), global batch %d, %d steps/epoch",
             train_info.n, "in memory" if train_data.in_memory else "streamed", val_info.n, replicas,
             global_batch, train_data.steps)

    try:
        with strategy.scope():
            size = train_info.image_size
            model = build_model(config.model.name, (size, size, 3), len(train_info.class_names),
                                **config.model.args)
            model.compile(
                optimizer=make_optimizer(t.optimizer, initial_learning_rate(t.lr, t.epochs)),
                loss=make_loss(t, train_info.class_counts()),
                metrics=[make_accuracy(t.label_smoothing, mixing.active)],
                jit_compile=False,
            )
        timer = epoch_timer()
        history_cb = history_callback(checkpoint_dir / HISTORY_FILE)
        callbacks = [
            timer,  # first: its epoch end is the end of the training phase
            finite_loss_guard(),  # before the checkpoint and the history keep a NaN epoch
            train_data.callback(),
            schedule_callback(t.lr, t.epochs),
            macro_f1_callback(val_data.dataset, val_info.labels, config.evaluate.target_prior),
            history_cb,
            epoch_progress(config.name, t.epochs),
        ]
        if run is not None:
            from longtail.tracking.runs import epoch_logger

            callbacks.append(epoch_logger(run))
        callbacks.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir / BACKUP_SUBDIR),
                                                          delete_checkpoint=False))
        callbacks.extend(extra_callbacks)
        verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
        model.fit(train_data.dataset, epochs=t.epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    history = history_cb.history
    posthoc_tau = _choose_posthoc(config, model, val_data.dataset, val_info, train_info, out_dir, run)
    return _write_model_dir(
        model, config, preprocessing, history, out_dir, run, train_info,
        TrainResult(
            model_dir=out_dir,
            run_id=run.run_id if run else None,
            epochs_run=len(history.get("loss", [])),
            best_val_macro_f1=max(history.get(VAL_MACRO_F1, [0.0])),
            final_val_macro_f1=(history.get(VAL_MACRO_F1) or [0.0])[-1],
            history=history,
            images_per_second=_images_per_second(timer.seconds, train_data.steps * global_batch),
            seconds=0.0,
            replicas=replicas,
            global_batch_size=global_batch,
            steps_per_epoch=train_data.steps,
            resumed_from_epoch=t.epochs if history_cb.first_epoch is None else history_cb.first_epoch,
            posthoc_tau=posthoc_tau,
        ),
    )


def _choose_posthoc(config: ExperimentConfig, model: Any, val_inputs: Any, val_info: SplitInfo,
                    train_info: SplitInfo, out_dir: Path, run: Any) -> float:
    """Resolve evaluate.posthoc_tau on the val split; write it into the model directory and MLflow.

    Returns the tau predict will apply (0: none, and no file is written).
    """
    from longtail.logit_adjustment import choose_adjustment
    from longtail.model_dir import ADJUSTMENT_FILE

    setting = config.evaluate.posthoc_tau
    (out_dir / ADJUSTMENT_FILE).unlink(missing_ok=True)
    if setting == 0:
        return 0.0
    probs = softmax(model.predict(val_inputs, verbose=0))
    choice = choose_adjustment(setting, probs, val_info.labels, train_info.class_counts(),
                               target_prior=config.evaluate.target_prior)
    out_dir.mkdir(parents=True, exist_ok=True)
    choice.adjustment.save(out_dir)
    log.info("post-hoc logit adjustment: tau %.2f%s, val macro-F1 %.4f -> %.4f", choice.adjustment.tau,
             " (tuned)" if choice.tuned else "", choice.val_macro_f1_before, choice.val_macro_f1_after)
    if run is not None:
        from longtail.tracking.runs import log_posthoc_choice

        log_posthoc_choice(run, choice.adjustment.tau, choice.val_macro_f1_before, choice.val_macro_f1_after,
                           step=config.train.epochs)
    return choice.adjustment.tau


def _images_per_second(epoch_seconds: list[float], images_per_epoch: int) -> float:
    """Median over epochs, leaving out the first (graph tracing) when there are others."""
    timed = epoch_seconds[1:] or epoch_seconds
    return float(images_per_epoch / np.median(timed)) if timed else 0.0


def _write_model_dir(model: Any, config: ExperimentConfig, preprocessing: Preprocessing,
                     history: dict[str, list[float]], out_dir: Path, run: Any, train_info: SplitInfo,
                     result: TrainResult) -> TrainResult:
    """Everything predict/evaluate need, next to each other; then the same into MLflow."""
    from longtail.learning_curves import plot_learning_curves
    from longtail.tracking.model_runs import RunInfo

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / MODEL_FILE)
    pre_path = preprocessing.save(out_dir)
    save_config(config, out_dir / CONFIG_FILE)
    write_text(out_dir / HISTORY_FILE, json.dumps(history, indent=1))
    curves = plot_learning_curves(history, out_dir / CURVES_FILE, title=config.name)
    if run is not None:
        RunInfo(run.tracking_uri, run.experiment, run.run_id).save(out_dir)
        run.log_artifact(curves)
        run.log_artifact(out_dir / HISTORY_FILE)
        run.log_artifact(out_dir / CONFIG_FILE)
        size = train_info.image_size
        example = np.zeros((1, size, size, 3), dtype=np.float32)
        from longtail.logit_adjustment import LogitAdjustment, probability_model
        from longtail.model_dir import ADJUSTMENT_FILE

        # MLflow serves probabilities, the post-hoc adjustment included: what `longtail predict` computes.
        adjustment = LogitAdjustment.load(out_dir)
        run.log_keras_model(probability_model(model, adjustment), example, [pre_path])
        if adjustment is not None:
            run.log_artifact(out_dir / ADJUSTMENT_FILE)
    return result


def _checkpoint_files(checkpoint_dir: Path) -> list[Path]:
    """The checkpoint layout training owns: resume.json, history.json and Keras' backup files."""
    backup = checkpoint_dir / BACKUP_SUBDIR
    return [checkpoint_dir / RESUME_FILE, checkpoint_dir / HISTORY_FILE, *(backup / n for n in KERAS_BACKUP_FILES)]


def _remove_checkpoints(checkpoint_dir: Path) -> None:
    """Drop the resume state of a finished training: the files of its layout, and its folders once empty."""
    for path in _checkpoint_files(checkpoint_dir):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (checkpoint_dir / BACKUP_SUBDIR).rmdir()


@contextlib.contextmanager
def _locked_checkpoints(checkpoint_dir: Path) -> Iterator[None]:
    """Hold the checkpoint directory's lock; afterwards remove the folder if training left it empty."""
    try:
        with output_lock(checkpoint_dir, "checkpoint directory"):
            yield
    finally:
        with contextlib.suppress(OSError):
            checkpoint_dir.rmdir()


def checkpoint_dir_for(root: str, key: str) -> Path | None:
    """`root/key` when a checkpoint root is given (a volume that outlives the pod), else None (the default).

    On a cluster the root is a mounted PersistentVolumeClaim and the key the pipeline run's id, so a
    retried train task finds the state its killed predecessor left and resumes from that epoch.
    """
    if not root:
        return None
    if not key or "/" in key or key in (".", ".."):
        raise ConfigError(f"checkpoint key must be a plain name (the pipeline run id), got {key!r}")
    return Path(root) / key
