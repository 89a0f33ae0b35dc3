"""Train one experiment: HDF5 splits in, a model directory (and one MLflow run) out.

`train.batch_size` is the batch per replica (per GPU); the global batch, the one each optimizer
step averages over, is batch_size x replicas, as in the seed log's 2-GPU runs (docs/seed-log.md "EXP4"). The learning rate is
not rescaled with the replica count.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longtail.config import ExperimentConfig
from longtail.learning_curves import plot_learning_curves
from longtail.logit_adjustment import choose_adjustment, plot_posthoc_gains, probability_model
from longtail.model_dir import ModelDir, RunInfo
from longtail.output_lock import output_lock
from longtail.prediction import predict_probabilities
from longtail.preprocessing import Preprocessing
from longtail.schedules import initial_learning_rate, schedule_callback
from longtail.splits import SplitInfo, read_info
from longtail.tracking.inputs import split_dataset
from longtail.tracking.names import (
    BATCH_SIZE_USED_PARAM,
    JIT_COMPILE_USED_PARAM,
    PRECISION_USED_PARAM,
    VAL_MACRO_F1,
)
from longtail.tracking.runs import epoch_logger, log_posthoc_choice, log_training_facts, start_experiment_run
from longtail.training.factories import (
    batch_for_steps,
    distribution_strategy,
    make_accuracy,
    make_loss,
    make_optimizer,
    target_encoding,
    training_jit_compile,
    training_precision,
)
from longtail.training.inputs import check_splits, load_class_weights
from longtail.training.resume import (
    backup_path,
    config_fingerprint,
    epochs_done,
    history_path,
    locked_checkpoints,
    read_resume,
    remove_checkpoints,
    write_resume,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training produced.

    images_per_second: training phase only (no validation), median over epochs after the first;
        cpu_ms_per_image likewise, in CPU time (every thread of the process).
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
    precision: str = "float32"  # the dtype policy train.precision resolved to on this machine
    jit_compile: bool = False  # whether train.jit_compile resolved to XLA-compiled steps on this machine
    cpu_ms_per_image: float = 0.0  # process CPU time per training image, as images_per_second is taken



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
    run_tags: dict[str, str] | None = None,
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
        run_tags: more tags for a new MLflow run (a search trial's study and number).
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
    # check_splits also refuses a train split without mean_rgb, which mean_subtraction needs.
    preprocessing = dataclasses.replace(check_splits(train_info, val_info), scale=config.preprocess.scale)
    class_weights = load_class_weights(weights_json, train_info.class_names) if weights_json else None
    if class_weights is None and config.weights.scheme != "none":
        log.warning("weights.scheme is %s but no weights file was given: training unweighted",
                    config.weights.scheme)

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else ModelDir(out_dir).checkpoints
    fingerprint = config_fingerprint(config, train_info, val_info)
    # One training per model directory and per checkpoint directory: a second one would resume
    # (and then fail) the first's live run.
    with output_lock(out_dir, "model directory"), locked_checkpoints(checkpoint_dir):
        resume = read_resume(checkpoint_dir, fingerprint, config, fresh)

        run = None
        if tracking_uri:
            run, resumed = start_experiment_run(tracking_uri, config, source=source, parent_run_id=parent_run_id,
                                                resume_run_id=resume.get("run_id"), task_run_id=task_run_id,
                                                tags=run_tags)
            if not resumed:
                log_training_facts(run, config, train_info, val_info, class_weights)
        write_resume(checkpoint_dir, fingerprint, run.run_id if run else None, config)

        monitor = None
        try:
            monitor = _start_mlflow_extras(run, resume, train_h5, val_h5, system_metrics)
            result = _fit(config, train_info, val_info, preprocessing, class_weights, out_dir, checkpoint_dir,
                          run, progress, devices, extra_callbacks)
        except BaseException:
            if run is not None:
                _stop_monitor(monitor)
                run.finish("FAILED")
            if epochs_done(checkpoint_dir) == 0:  # nothing to resume: a corrected re-run starts clean
                remove_checkpoints(checkpoint_dir)
            raise
        result.seconds = time.perf_counter() - started
        remove_checkpoints(checkpoint_dir)
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

    # These import TensorFlow when they are imported, so they load here, with keras, and
    # `import longtail.training` (the CLI's, before a config is checked) stays free of it.
    from longtail.augmentation import Augmentation, Mixing
    from longtail.input_pipeline import make_dataset
    from longtail.models import build_model
    from longtail.models.fused_batch_norm import with_fused_batch_norm
    from longtail.training.callbacks import (
        CheckpointBackup,
        EmaSwap,
        EpochProgress,
        EpochTimer,
        FiniteLossGuard,
        PersistentHistory,
        ValMetrics,
    )

    t = config.train
    keras.utils.set_random_seed(t.seed)
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = distribution_strategy(t.gpus, devices)
    replicas = int(strategy.num_replicas_in_sync)
    batch = batch_for_steps(t.batch_size, train_info.n, t.min_steps_per_epoch, replicas)
    if batch != t.batch_size:
        print(f"{config.name}: batches of {batch}, not {t.batch_size}: {train_info.n} training images give "
              f"{train_info.n // (t.batch_size * replicas)} steps an epoch at {t.batch_size} "
              f"(train.min_steps_per_epoch {t.min_steps_per_epoch})", flush=True)
    global_batch = batch * replicas
    policy = training_precision(t.precision, devices)
    jit = training_jit_compile(t.jit_compile, policy, replicas, devices)
    # Printed like the epoch lines (EpochProgress), whatever `progress` says: the step's log shows it.
    print(f"{config.name}: training in {policy} (train.precision: {t.precision}), "
          f"{'XLA-compiled' if jit else 'no XLA'} (train.jit_compile: {str(t.jit_compile).lower()})", flush=True)
    if run is not None:
        run.log_params({PRECISION_USED_PARAM: policy, JIT_COMPILE_USED_PARAM: jit, BATCH_SIZE_USED_PARAM: batch})
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)

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
            # Trained with fused batch norm (one oneDNN/cuDNN op per layer: docs/benchmarks.md "Training precision");
            # its weights go back into `model`, built of Keras' own layers, which is what is saved.
            trained = with_fused_batch_norm(model)
            trained.compile(
                optimizer=make_optimizer(t.optimizer, initial_learning_rate(t.lr, t.epochs)),
                loss=make_loss(t, train_info.class_counts()),
                metrics=[make_accuracy(t.label_smoothing, mixing.active)],
                jit_compile=jit,
            )
        timer = EpochTimer()
        history_cb = PersistentHistory(history_path(checkpoint_dir))
        callbacks = [
            timer,  # first: its epoch end is the end of the training phase
            FiniteLossGuard(),  # before the checkpoint and the history keep a NaN epoch
            train_data.callback(),
            schedule_callback(t.lr, t.epochs),
            *([EmaSwap()] if t.optimizer.ema > 0 else []),  # the averaged weights in, for val
            ValMetrics(val_data.dataset, val_info.labels, config.evaluate.target_prior),
            *([EmaSwap()] if t.optimizer.ema > 0 else []),  # and out, before anything saves them
            history_cb,
            EpochProgress(config.name, t.epochs),
        ]
        if run is not None:
            callbacks.append(epoch_logger(run))
        callbacks.append(CheckpointBackup(backup_path(checkpoint_dir)))
        callbacks.extend(extra_callbacks)
        verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
        trained.fit(train_data.dataset, epochs=t.epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
        model.set_weights(trained.get_weights())
    finally:
        keras.config.set_dtype_policy(previous_policy)

    history = history_cb.history
    images, epoch_s = train_data.steps * global_batch, _median_epoch(timer.seconds)
    posthoc_tau = _choose_posthoc(config, model, preprocessing, val_info, train_info, out_dir, run)
    return _write_model_dir(
        model, config, preprocessing, history, out_dir, run, train_info,
        TrainResult(
            model_dir=out_dir,
            run_id=run.run_id if run else None,
            epochs_run=len(history.get("loss", [])),
            best_val_macro_f1=max(history.get(VAL_MACRO_F1, [0.0])),
            final_val_macro_f1=(history.get(VAL_MACRO_F1) or [0.0])[-1],
            history=history,
            images_per_second=images / epoch_s if epoch_s else 0.0,
            cpu_ms_per_image=1000.0 * _median_epoch(timer.cpu_seconds) / images,
            seconds=0.0,
            replicas=replicas,
            global_batch_size=global_batch,
            steps_per_epoch=train_data.steps,
            resumed_from_epoch=t.epochs if history_cb.first_epoch is None else history_cb.first_epoch,
            posthoc_tau=posthoc_tau,
            precision=policy,
            jit_compile=jit,
        ),
    )


def _choose_posthoc(config: ExperimentConfig, model: Any, preprocessing: Preprocessing, val_info: SplitInfo,
                    train_info: SplitInfo, out_dir: Path, run: Any) -> float:
    """Resolve evaluate.posthoc_tau on the val split; write it into the model directory and MLflow.

    Returns the tau predict will apply (0: none, and no file is written).
    """
    setting = config.evaluate.posthoc_tau
    model_dir = ModelDir(out_dir)
    model_dir.remove_adjustment()
    if setting == 0:
        return 0.0
    # The val probabilities evaluate and the submission will adjust: with evaluate.tta and tta_shift's views.
    probs = predict_probabilities(model, preprocessing, val_info.path, tta=config.evaluate.tta,
                                  tta_shift=config.evaluate.tta_shift)
    choice = choose_adjustment(setting, probs, val_info.labels, train_info.class_counts(),
                               target_prior=config.evaluate.target_prior)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir.save_adjustment(choice.adjustment)
    gain = choice.gain
    if choice.within_noise():
        log.info("post-hoc logit adjustment: tau 0 (tuned): tau %.2f led on val by %s, within the val split's "
                 "noise, so the model's own decision stands (%s)", choice.best_tau, gain.text() if gain else "",
                 choice.curve())
    else:
        log.info("post-hoc logit adjustment: tau %.2f%s, val macro-F1 %.4f -> %.4f%s (%s)", choice.adjustment.tau,
                 " (tuned)" if choice.tuned else "", choice.val_macro_f1_before, choice.val_macro_f1_after,
                 f", {gain.text()} over tau 0" if gain else "", choice.curve())
    plot = plot_posthoc_gains(choice, model_dir.posthoc_plot_file, title=config.name)
    if run is not None:
        log_posthoc_choice(run, choice.adjustment.tau, choice.val_macro_f1_before, choice.val_macro_f1_after,
                           step=config.train.epochs, best_tau=choice.best_tau,
                           gain_interval=(gain.low, gain.high) if gain else None)
        run.log_artifact(plot)
    return choice.adjustment.tau


def _median_epoch(epoch_seconds: list[float]) -> float:
    """Median over epochs, leaving out the first (graph tracing) when there are others; 0 for none."""
    timed = epoch_seconds[1:] or epoch_seconds
    return float(np.median(timed)) if timed else 0.0


def _write_model_dir(model: Any, config: ExperimentConfig, preprocessing: Preprocessing,
                     history: dict[str, list[float]], out_dir: Path, run: Any, train_info: SplitInfo,
                     result: TrainResult) -> TrainResult:
    """Everything predict/evaluate need, next to each other; then the same into MLflow."""
    model_dir = ModelDir(out_dir)
    model_dir.save_model(model)
    pre_path = model_dir.save_preprocessing(preprocessing)
    model_dir.save_precision(result.precision)
    config_path = model_dir.save_config(config)
    history_file = model_dir.save_history(history)
    curves = plot_learning_curves(history, model_dir.curves_file, title=config.name)
    if run is not None:
        RunInfo(run.tracking_uri, run.experiment, run.run_id).save(out_dir)
    model_dir.record_outputs()  # last of the files, so a re-run may replace them
    if run is not None:
        run.log_artifact(curves)
        run.log_artifact(history_file)
        run.log_artifact(config_path)
        size = train_info.image_size
        example = np.zeros((1, size, size, 3), dtype=np.float32)
        # MLflow serves probabilities, the post-hoc adjustment included: what `longtail predict` computes.
        adjustment = model_dir.adjustment()
        run.log_keras_model(probability_model(model, adjustment), example, [pre_path])
        if adjustment is not None:
            run.log_artifact(model_dir.adjustment_file)
    return result


