"""Training, one job per module (docs/architecture.md).

- fit: train(), from HDF5 splits to a model directory and one MLflow run;
- inputs: the train/val pair checked to fit together, and the class weights file;
- factories: the loss, accuracy, optimizer and distribution strategy a config asks for;
- callbacks: the Keras callbacks of a fit (imports keras; fit loads it inside the fit);
- resume: the checkpoint directory a killed training resumes from.
"""

from longtail.training.factories import (
    distribution_strategy,
    make_accuracy,
    make_loss,
    make_optimizer,
    target_encoding,
)
from longtail.training.fit import TrainResult, train
from longtail.training.inputs import check_splits, load_class_weights
from longtail.training.resume import checkpoint_dir_for, config_fingerprint

__all__ = [
    "TrainResult",
    "check_splits",
    "checkpoint_dir_for",
    "config_fingerprint",
    "distribution_strategy",
    "load_class_weights",
    "make_accuracy",
    "make_loss",
    "make_optimizer",
    "target_encoding",
    "train",
]
