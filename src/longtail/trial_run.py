"""One search trial as a use case: class weights, train and evaluate, the code the pipeline's steps run,
in one process, printing the metric lines of longtail.trial_metrics (one per epoch, one at the end).

`longtail trial` runs it; `longtail tune` starts one such process per Optuna trial and reads its lines
(each epoch's figure goes to the pruner), and a Katib Experiment's trial Job runs the same command, whose
stdout Katib's StdOut metrics collector parses.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, TextIO

import keras

from longtail.class_weights import write_weights
from longtail.config import ExperimentConfig
from longtail.evaluation import evaluate
from longtail.tracking.names import VAL_MACRO_F1
from longtail.training import train
from longtail.trial_metrics import (
    EPOCH,
    EVALUATION_FOLDER,
    MODEL_FOLDER,
    OBJECTIVE,
    OBJECTIVE_HIGH,
    OBJECTIVE_LOW,
    WEIGHTS_FILE,
    TrialResult,
    metric_line,
)


def epoch_metric_callback(stream: TextIO | None = None) -> Any:
    """A Keras callback printing `epoch=N val_macro_f1=X` after each epoch's val figures (ValMetrics')."""
    out = stream or sys.stdout

    class EpochMetricLines(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get(VAL_MACRO_F1)
            if value is not None and math.isfinite(float(value)):
                print(metric_line({EPOCH: epoch + 1, OBJECTIVE: float(value)}), file=out, flush=True)

    return EpochMetricLines()


def run_trial(config: ExperimentConfig, train_h5: str | Path, val_h5: str | Path, out_dir: str | Path, *,
              tracking_uri: str | None = None, parent_run_id: str | None = None,
              run_tags: dict[str, str] | None = None, stream: TextIO | None = None) -> TrialResult:
    """Weights (when the config weighs classes), train and evaluate `config`; print the metric lines.

    Writes OUT/weights.json, OUT/model/, OUT/evaluation/ and OUT/trial.json (last: its presence means
    the trial finished). The objective is the evaluation's val macro-F1 under evaluate.target_prior,
    with the evaluation's settings (TTA, post-hoc adjustment), so a trial scores as the pipeline would.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights_json = None
    if config.weights.scheme != "none":
        weights_json = out / WEIGHTS_FILE
        write_weights(train_h5, weights_json, config.weights.scheme, config.weights.beta)
    trained = train(config, train_h5, val_h5, out / MODEL_FOLDER, weights_json=weights_json,
                    tracking_uri=tracking_uri, parent_run_id=parent_run_id, progress=False,
                    extra_callbacks=[epoch_metric_callback(stream)], source="longtail trial", run_tags=run_tags)
    settings = config.evaluate
    evaluated = evaluate(out / MODEL_FOLDER, val_h5, out / EVALUATION_FOLDER, min_macro_f1=settings.min_macro_f1,
                         tracking_uri=tracking_uri, tta=settings.tta, tta_shift=settings.tta_shift,
                         weights_json=weights_json, target_prior=settings.target_prior)
    span = evaluated.interval
    values: dict[str, float | int] = {EPOCH: trained.epochs_run, OBJECTIVE: evaluated.macro_f1}
    if span is not None:
        values.update({OBJECTIVE_LOW: span.low, OBJECTIVE_HIGH: span.high})
    print(metric_line(values), file=stream or sys.stdout, flush=True)
    result = TrialResult(value=evaluated.macro_f1, low=span.low if span else None, high=span.high if span else None,
                         epochs=trained.epochs_run, run_id=trained.run_id, model_dir=str(out / MODEL_FOLDER),
                         passed=evaluated.passed)
    result.save(out)
    return result
