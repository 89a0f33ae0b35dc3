"""A model directory and an evaluation folder (docs/architecture.md "Model directory"): every file name, load and save.

ModelDir and EvaluationDir are the only code that knows what a file in either folder is called and
how it is stored; everything else asks them, and ModelDir reads and writes the value classes that
live in a model directory (Preprocessing, LogitAdjustment, RunInfo). A model directory is opened
once (one ModelDir) and passed on: it reads each record the first time it is asked for and keeps it.
The names and formats on disk are a contract: they do not change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from longtail.atomic_file import atomic_path, write_text
from longtail.config import ExperimentConfig, save_config
from longtail.credentials import split_userinfo
from longtail.errors import DataError, LongtailError
from longtail.file_bounds import CONFIG_MAX_BYTES, RECORD_MAX_BYTES, read_bounded
from longtail.keras_archive import check_keras_archive
from longtail.output_paths import record_written
from longtail.preprocessing import Preprocessing

if TYPE_CHECKING:
    from longtail.logit_adjustment import LogitAdjustment

log = logging.getLogger(__name__)

# The Keras model, and exactly the preprocessing predict must apply to it.
MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
# The experiment config it was trained with, and the MLflow run it belongs to (when tracked).
CONFIG_FILE = "config.yaml"
RUN_FILE = "mlflow_run.json"
# How this machine trained it: the dtype policy train.precision resolved to ({"precision": "mixed_bfloat16"}).
TRAINING_FILE = "training.json"
# Per-epoch training logs and their plot.
HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"
# The post-hoc logit adjustment predict applies (only when evaluate.posthoc_tau is set).
ADJUSTMENT_FILE = "logit_adjustment.json"
# Its val macro-F1 gain over no adjustment at every tau scored, with paired intervals.
POSTHOC_PLOT_FILE = "posthoc_tau.png"
# Where training keeps its resume state unless it is given another checkpoint directory.
CHECKPOINT_SUBDIR = "checkpoints"
# A checkpoint directory (longtail.training.resume): resume.json and history.json, next to Keras'
# BackupAndRestore state in BACKUP_SUBDIR.
RESUME_FILE = "resume.json"
BACKUP_SUBDIR = "backup"
# What keras.callbacks.BackupAndRestore (Keras 3) writes into BACKUP_SUBDIR: the only files there
# that training may remove. Anything else in a --checkpoint-dir is someone else's.
KERAS_BACKUP_FILES = ("latest.weights.h5", "training_metadata.json", "latest.weights.h5.bkp",
                      "training_metadata.json.bkp")

# An evaluation folder: the numbers, sklearn's report, report.md (KFP's Markdown artifact) and the plots.
METRICS_FILE = "metrics.json"
REPORT_TXT = "report.txt"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
PER_CLASS_PNG = "per_class_f1.png"

# Every file training writes into a model directory, and evaluate into its folder: the names a later
# run may overwrite only where the folder's record says longtail wrote them (output_paths).
TRAINING_OUTPUTS = (MODEL_FILE, PREPROCESSING_FILE, TRAINING_FILE, CONFIG_FILE, HISTORY_FILE, CURVES_FILE,
                    RUN_FILE, ADJUSTMENT_FILE, POSTHOC_PLOT_FILE)
EVALUATION_OUTPUTS = (METRICS_FILE, REPORT_TXT, REPORT_MD, CONFUSION_PNG, PER_CLASS_PNG)


def write_json(model_dir: str | Path, name: str, data: Any, *, indent: int | None = 2) -> Path:
    """Write `data` as JSON to `model_dir/name`, atomically (the folder is created if missing)."""
    path = Path(model_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(data, indent=indent))


def read_json(model_dir: str | Path, name: str) -> Any:
    """The JSON in `model_dir/name`, or None when the model directory has no such file.

    Raises:
        DataError: not a regular file, over file_bounds.RECORD_MAX_BYTES (both before it is read), or not JSON.
    """
    path = Path(model_dir) / name
    data = read_bounded(path, str(path), RECORD_MAX_BYTES, DataError)
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise DataError(f"{path} is corrupt (not JSON: {e}); train the model again or restore the file") from None


@dataclass
class RunInfo:
    """Which MLflow run a model belongs to (mlflow_run.json), so evaluate/predict log into the training run."""

    tracking_uri: str
    experiment: str
    run_id: str

    def save(self, model_dir: str | Path) -> Path:
        """Write mlflow_run.json into a model directory (the URI without credentials: they live in the environment)."""
        return write_json(model_dir, RUN_FILE, {**asdict(self), "tracking_uri": split_userinfo(self.tracking_uri)[0]})

    @classmethod
    def load(cls, model_dir: str | Path) -> RunInfo | None:
        """Read mlflow_run.json, or None when the model was trained without tracking."""
        data = read_json(model_dir, RUN_FILE)
        return None if data is None else cls(**data)


def stored_tracking_uri(model_dir: str | Path) -> str | None:
    """The tracking URI a model directory's mlflow_run.json records; None without one (or unreadable)."""
    try:
        info = RunInfo.load(model_dir)
    except (LongtailError, TypeError):  # the command's own read names a damaged file
        return None
    return info.tracking_uri if info is not None else None


def pick_model_dir(model_dirs: list[str | Path], run_id: str) -> Path:
    """The model directory (among a sweep's) whose mlflow_run.json names `run_id`."""
    for d in model_dirs:
        info = RunInfo.load(d)
        if info is not None and info.run_id == run_id:
            return Path(d)
    raise LongtailError(f"none of the {len(model_dirs)} model directories belongs to run {run_id}")


def _file(name: str) -> property:
    """A read-only attribute: the path of the file `name` inside the folder (self.path)."""
    return property(lambda self: self.path / name, doc=f"{name} in this folder.")


class ModelDir:
    """One model directory: what training writes and predict, evaluate and MLflow read back.

    preprocessing(), adjustment(), run_info() and config() read their file the first time they are
    asked and keep what they read, so one ModelDir passed from step to step reads each file once.
    A write through this object drops what it kept of that file; a file changed by other means after
    it was read is not seen again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._read: dict[str, Any] = {}  # file name -> what its loader returned

    def __repr__(self) -> str:
        return f"ModelDir({str(self.path)!r})"

    model_file = _file(MODEL_FILE)
    config_file = _file(CONFIG_FILE)
    history_file = _file(HISTORY_FILE)
    curves_file = _file(CURVES_FILE)
    adjustment_file = _file(ADJUSTMENT_FILE)
    posthoc_plot_file = _file(POSTHOC_PLOT_FILE)

    @property
    def checkpoints(self) -> Path:
        """The default checkpoint directory of a training into this model directory."""
        return self.path / CHECKPOINT_SUBDIR

    def prediction_files(self) -> list[Path]:
        """What `longtail predict` reads: the model, its preprocessing, its config (evaluate.tta and
        tta_shift) and the post-hoc adjustment when there is one; a copy of them is a model directory
        that predicts the same (the MLflow model's python_function flavour holds one)."""
        names = (MODEL_FILE, PREPROCESSING_FILE, CONFIG_FILE, ADJUSTMENT_FILE)
        return [self.path / name for name in names if (self.path / name).is_file()]

    def read_json(self, name: str) -> Any:
        """The JSON record `name` (one of this module's file names), or None when there is none."""
        return read_json(self.path, name)

    def write_json(self, name: str, data: Any, *, indent: int | None = 2) -> Path:
        """Write the JSON record `name` atomically."""
        self._read.pop(name, None)
        return write_json(self.path, name, data, indent=indent)

    def _once(self, name: str, load: Callable[[], Any]) -> Any:
        """What `load` returns for the file `name`, called the first time only (a load that raises keeps nothing)."""
        if name not in self._read:
            self._read[name] = load()
        return self._read[name]

    def save_preprocessing(self, preprocessing: Preprocessing) -> Path:
        """Write preprocessing.json."""
        return self.write_json(PREPROCESSING_FILE, asdict(preprocessing))

    def preprocessing(self) -> Preprocessing:
        """preprocessing.json: exactly the preprocessing predict applies to this model (read once).

        Raises:
            DataError: the file is missing, or not a longtail preprocessing file.
        """
        return self._once(PREPROCESSING_FILE, self._load_preprocessing)

    def _load_preprocessing(self) -> Preprocessing:
        """preprocessing.json as read from disk (preprocessing() keeps it)."""
        data = self.read_json(PREPROCESSING_FILE)
        if data is None:
            raise DataError(f"{self.path} is not a longtail model directory: {PREPROCESSING_FILE} is missing")
        try:
            return Preprocessing(**data)
        except TypeError as e:  # not a mapping, or other keys than these fields
            raise DataError(f"{self.path / PREPROCESSING_FILE} is not a longtail preprocessing file ({e}); "
                            "train the model again or restore the file") from None

    def save_adjustment(self, adjustment: LogitAdjustment) -> Path:
        """Write the post-hoc logit adjustment (logit_adjustment.json)."""
        return self.write_json(ADJUSTMENT_FILE, asdict(adjustment), indent=1)

    def adjustment(self) -> LogitAdjustment | None:
        """The post-hoc logit adjustment predict applies (read once); None when the model has none (tau 0:
        plain argmax).

        Raises:
            DataError: the file is not a valid logit adjustment.
        """
        return self._once(ADJUSTMENT_FILE, self._load_adjustment)

    def _load_adjustment(self) -> LogitAdjustment | None:
        """logit_adjustment.json as read from disk (adjustment() keeps it)."""
        # Scoring (and OpenCV under it) come with logit_adjustment: only a reader of an adjustment needs them.
        from longtail.logit_adjustment import LogitAdjustment

        try:
            data = self.read_json(ADJUSTMENT_FILE)
            return None if data is None else LogitAdjustment.from_record(data)
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.adjustment_file} is not a valid logit adjustment ({e}); re-run training") from e

    def run_info(self) -> RunInfo | None:
        """The MLflow run the model belongs to (mlflow_run.json), read once; None when trained without tracking."""
        return self._once(RUN_FILE, lambda: RunInfo.load(self.path))

    def config(self) -> dict[str, Any]:
        """The saved experiment config as plain data (load_config), read once; {} when there is none."""
        return self._once(CONFIG_FILE, self.load_config)

    def save_model(self, model: Any) -> Path:
        """Save the Keras model (model.keras) atomically: Keras writes a temporary `.keras` file beside it,
        renamed over it once whole (a link there is replaced, never written through)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.model_file, what="Keras model", keep_suffix=True) as tmp:
            model.save(tmp)
        return self.model_file

    def record_outputs(self) -> Path:
        """Record the training outputs now in the folder as longtail's, so a later training may replace them."""
        return record_written(self.path, TRAINING_OUTPUTS)

    def load_model(self) -> Any:
        """Load the Keras model (compile=False: inference only).

        Raises:
            DataError: no model.keras, one refused by keras_archive.check_keras_archive (truncated, not a
                Keras archive, over its size limits), or one Keras cannot load.
        """
        path = self.model_file
        if not path.exists():
            raise DataError(f"{self.path} is not a longtail model directory: {MODEL_FILE} is missing")
        check_keras_archive(path)  # before Keras (and TensorFlow's 700 MB) is imported
        import keras

        try:
            return keras.models.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 - Keras raises many types for a damaged file; the user's fix is one
            reason = " ".join(str(e).split())[:200]
            raise DataError(f"{path} cannot be loaded as a Keras model ({type(e).__name__}: {reason}); "
                            "train the model again or restore the file") from None

    def save_config(self, config: ExperimentConfig) -> Path:
        """Save the experiment config the model was trained with (config.yaml)."""
        self._read.pop(CONFIG_FILE, None)
        save_config(config, self.config_file)
        return self.config_file

    def load_config(self) -> dict[str, Any]:
        """The saved experiment config as plain data; {} when the model directory has none."""
        text = read_bounded(self.config_file, str(self.config_file), CONFIG_MAX_BYTES, DataError)
        if text is None:
            return {}
        data = yaml.safe_load(text)
        return data if isinstance(data, dict) else {}

    def save_precision(self, policy: str) -> Path:
        """Record the dtype policy the model trained under (training.json)."""
        return self.write_json(TRAINING_FILE, {"precision": policy})

    def precision(self) -> str:
        """The dtype policy the model trained under; float32 for a model directory from before it was recorded.

        Whatever it is, the saved model loads and predicts on any machine: Keras keeps each layer's
        policy, float32 weights, and float32 logits (the last layer), and TensorFlow runs bfloat16 and
        float16 ops on every CPU, only slower without the units for them.
        """
        return (self.read_json(TRAINING_FILE) or {}).get("precision", "float32")

    def save_history(self, history: dict[str, list[float]]) -> Path:
        """Save every epoch's logs (history.json)."""
        return self.write_json(HISTORY_FILE, history, indent=1)

    def load_history(self) -> dict[str, list[float]]:
        """Per-epoch training metrics from history.json ({} when the model directory has none or it is unreadable)."""
        path = self.history_file
        try:
            text = read_bounded(path, str(path), RECORD_MAX_BYTES, DataError)
            if text is None:
                return {}
            data = json.loads(text)
        except (DataError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("ignoring unreadable %s: %s", path, e)
            return {}
        return {k: list(v) for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}

    def remove_adjustment(self) -> None:
        """Drop a logit adjustment left by an earlier training into this folder, and its plot: training
        writes the two together, so the plot goes only beside the adjustment (a user's file of that
        name in a folder without one stays)."""
        self._read.pop(ADJUSTMENT_FILE, None)
        if self.adjustment_file.exists():
            self.posthoc_plot_file.unlink(missing_ok=True)
        self.adjustment_file.unlink(missing_ok=True)


class EvaluationDir:
    """One evaluation folder: what evaluate writes for a person to read, and the HTML report reads back."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"EvaluationDir({str(self.path)!r})"

    def paths(self) -> dict[str, Path]:
        """Where evaluate writes each file, by the key EvaluationResult.paths uses."""
        return {
            "metrics_json": self.path / METRICS_FILE,
            "report_txt": self.path / REPORT_TXT,
            "report_md": self.path / REPORT_MD,
            "confusion_png": self.path / CONFUSION_PNG,
            "per_class_png": self.path / PER_CLASS_PNG,
        }

    def plots(self) -> list[Path]:
        """The plots evaluate drew, in the order a report shows them (the ones present)."""
        return [p for p in (self.path / CONFUSION_PNG, self.path / PER_CLASS_PNG) if p.is_file()]

    def save_metrics(self, data: dict[str, Any]) -> Path:
        """Write metrics.json."""
        return write_text(self.path / METRICS_FILE, json.dumps(data, indent=1) + "\n")

    def record_outputs(self) -> Path:
        """Record the evaluation outputs now in the folder as longtail's, so a later evaluate may replace them."""
        return record_written(self.path, EVALUATION_OUTPUTS)

    def load_metrics(self) -> dict[str, Any]:
        """metrics.json.

        Raises:
            DataError: the folder has no metrics.json (it is not an evaluation folder).
        """
        path = self.path / METRICS_FILE
        data = read_bounded(path, str(path), RECORD_MAX_BYTES, DataError)
        if data is None:
            raise DataError(f"{self.path} is not an evaluation folder: {METRICS_FILE} is missing")
        return json.loads(data)

    def report_text(self) -> str | None:
        """report.txt (sklearn's classification_report), or None when the folder has none."""
        path = self.path / REPORT_TXT
        data = read_bounded(path, str(path), RECORD_MAX_BYTES, DataError)
        return None if data is None else data.decode("utf-8", errors="replace")
