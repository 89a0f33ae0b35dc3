"""The experiment config: one dataclass per section, every field declared once and defaulted.

Each field's declaration holds its type, default, bounds and whether it is a pipeline knob. A YAML
file is read by the hardened loader (`yaml_loader.py`), `key=value` overrides are applied
(`config_overrides.py`), and the mapping is checked and built into these dataclasses (`coercion.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from longtail.atomic_file import write_text
from longtail.class_weights import BETA_RULE, WeightScheme, beta_in_range
from longtail.coercion import build_dataclass, refuse_shared
from longtail.config_overrides import apply_overrides
from longtail.errors import ConfigError
from longtail.image_size import IMAGE_SIZE_MAX, IMAGE_SIZE_MIN
from longtail.losses import check_loss
from longtail.name_registry import check_maxima, declared_in_package, is_number, maxima_in_package
from longtail.seed import SEED_MAX
from longtail.yaml_loader import read_yaml_file

# Upper bounds that catch a typo (an extra zero) before it costs days of compute or all memory.
EPOCHS_MAX, BATCH_SIZE_MAX = 10_000, 65_536
# A learning rate above this is a typo (1e30 for 1e-3), and trains to NaN.
LR_MAX = 10.0


@dataclass(frozen=True)
class Bound:
    """A rule one config field's value must satisfy: `ok(value)`, worded `rule` in the error
    "config field <field> must be <rule>, got <value>"."""

    ok: Callable[[Any], bool]
    rule: str


def between(low: float, high: float) -> Bound:
    """low <= value <= high."""
    return Bound(lambda v: low <= v <= high, f"between {low} and {high}")


def at_least(low: float, note: str = "") -> Bound:
    """value >= low."""
    return Bound(lambda v: v >= low, f">= {low}{note}")


def unit_interval(*, closed_low: bool) -> Bound:
    """0 <= value < 1 (closed_low) or 0 < value < 1."""
    if closed_low:
        return Bound(lambda v: 0.0 <= v < 1.0, ">= 0 and < 1")
    return Bound(lambda v: 0.0 < v < 1.0, "> 0 and < 1")


def or_null(bound: Bound) -> Bound:
    """`bound`, or no value at all."""
    return Bound(lambda v: v is None or bound.ok(v), f"{bound.rule} or null")


POSITIVE_LR = Bound(lambda v: 0 < v <= LR_MAX, f"> 0 and <= {LR_MAX:g}")
MIX_ALPHA = Bound(lambda v: 0.0 <= v <= 10.0, "between 0 (off) and 10")


def setting(default: Any = dataclasses.MISSING, *bounds: Bound, factory: Callable[[], Any] | None = None,
            knob: str | None = None, text: bool = False) -> Any:
    """Declare a config field in one place: its default, the bounds its value must lie in, and
    whether it is a pipeline knob (`knob`: the pipeline parameter's name; `text`: a knob whose field
    takes a number or a word, a string parameter read as YAML). longtail.knobs and the generated
    pipeline signatures (longtail.pipelines.knob_signatures) read the knobs from here.
    """
    metadata = {"bounds": bounds, "knob": knob, "text": text}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _need(ok: bool, where: str, rule: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"config field {where} must be {rule}, got {got!r}")


@dataclass
class DataConfig:
    """How raw images become HDF5 splits (the ingest step)."""

    image_size: int = setting(32, between(IMAGE_SIZE_MIN, IMAGE_SIZE_MAX), knob="image_size")
    val_fraction: float = setting(0.2, unit_interval(closed_low=False))
    min_per_class: int = setting(0, at_least(0))
    max_classes: int | None = setting(None, or_null(at_least(2)))
    resize: Literal["stretch", "aspect"] = setting("stretch", knob="resize")
    clahe: bool = setting(False, knob="clahe")
    white_balance: bool = setting(False, knob="white_balance")
    # The train/val split seed. null falls back to train.seed (deprecated: a sweep groups its ingests
    # by the `data` section, so a seed there is one split per distinct seed).
    seed: int | None = setting(None, or_null(at_least(0)),
                               or_null(Bound(lambda v: v <= SEED_MAX, f"<= {SEED_MAX}")))


@dataclass
class PreprocessConfig:
    """How uint8 pixels become model inputs: /255, or subtract the train split's mean_rgb."""

    scale: Literal["scale", "mean_subtraction"] = setting("scale", knob="scale")


@dataclass
class WeightsConfig:
    """Class weights for the loss (the effective number of samples: docs/seed-log.md "EXP9")."""

    scheme: WeightScheme = setting("effective-number", knob="weight_scheme")
    beta: float = setting(0.999, Bound(beta_in_range, BETA_RULE), knob="weight_beta")
    # Deferred re-weighting (Cao et al. 2019): weights are 1 before this epoch, the scheme's from it on.
    start_epoch: int = setting(0, knob="weight_start_epoch")

    def check(self, epochs: int) -> None:
        """Re-weighting starts within the run."""
        _need(0 <= self.start_epoch < epochs, "weights.start_epoch", f">= 0 and < train.epochs ({epochs})",
              self.start_epoch)


@dataclass
class RegistryChoice:
    """A builder chosen from a registry by name (models, losses), with its keyword arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig(RegistryChoice):
    """A model from the registry by name, with builder keyword arguments."""

    name: str = setting("resnet_cifar", knob="model_name")

    def check(self) -> None:
        """model.name among the registered models, and model.args within what the model's registration
        declares (both read from the models' source: no TensorFlow start-up): an argument with a declared
        maximum a number (or list of numbers) from 0 to it, every other number >= 0 (sizes, rates and
        decays all; the builder checks the rest)."""
        known = declared_in_package("longtail.models", "register_model")
        maxima = maxima_in_package("longtail.models", "register_model")
        if not known:  # no source to read: ask the registry, Keras start-up and all, rather than pass any name
            from longtail.models import available_models  # imports Keras: only here
            from longtail.models.registry import model_maxima

            known, maxima = available_models(), model_maxima
        if self.name not in known:
            raise ConfigError(
                f"config field model.name: unknown model {self.name!r}; known models: {', '.join(known)}")
        declared = maxima.get(self.name, {})
        for key, value in self.args.items():
            for v in value if isinstance(value, list) else [value]:
                if key in declared:
                    numbers = "numbers" if isinstance(value, list) else "a number"
                    _need(is_number(v), f"model.args.{key}", f"{numbers} from 0 to {declared[key]:g}", value)
                _need(isinstance(v, bool) or not isinstance(v, int | float) or v >= 0, f"model.args.{key}",
                      ">= 0", value)
        check_maxima(self.args, declared, "model.args")


@dataclass
class OptimizerConfig:
    """The optimizer (SGD with momentum as in the log, or Adam)."""

    name: Literal["sgd", "adam"] = setting("sgd", knob="optimizer")
    momentum: float = setting(0.9, unit_interval(closed_low=True))
    nesterov: bool = True
    weight_decay: float = setting(0.0, at_least(0), knob="weight_decay")
    # Weight averaging (Polyak): the momentum of an exponential moving average of the weights, updated
    # every step (Keras' use_ema); 0 is off. Val macro-F1 is measured on the averaged weights each
    # epoch, and the saved model is the average. 0.99 averages over about the last 100 steps. The
    # momentum warms up: min(ema, (1 + t) / (10 + t)) at step t (longtail.training.ema), so a run of a
    # few hundred steps is scored on its own recent weights, not on the initial network's. It pays most
    # where the weights still move late in a run (a high LR to the end, small batches).
    ema: float = setting(0.0, Bound(lambda v: v == 0 or 0.5 <= v < 1, "0 (off), or >= 0.5 and < 1"), knob="ema")


@dataclass
class LRConfig:
    """The learning-rate schedule, per epoch.

    constant: `initial` throughout. step: `values[i]` from epoch `boundaries[i-1]` on
    (len(values) == len(boundaries) + 1). poly: initial * (1 - epoch/epochs) ** power.
    cosine: initial * 0.5 * (1 + cos(pi * epoch/epochs)).
    """

    schedule: Literal["constant", "step", "poly", "cosine"] = setting("poly", knob="lr_schedule")
    initial: float = setting(0.1, POSITIVE_LR, knob="lr_initial")
    power: float = setting(2.5, Bound(lambda v: v > 0, "> 0"), knob="lr_power")
    boundaries: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    warmup_epochs: int = 0

    def check(self, epochs: int) -> None:
        """Warm-up within the run; a step schedule's values and boundaries agree."""
        _need(0 <= self.warmup_epochs < epochs, "train.lr.warmup_epochs", f">= 0 and < train.epochs ({epochs})",
              self.warmup_epochs)
        if self.schedule == "step":
            _need(len(self.values) == len(self.boundaries) + 1, "train.lr.values",
                  f"one longer than train.lr.boundaries ({len(self.boundaries)} boundaries)", self.values)
            _need(all(b > 0 for b in self.boundaries) and self.boundaries == sorted(set(self.boundaries)),
                  "train.lr.boundaries", "strictly increasing epochs > 0", self.boundaries)
            _need(all(POSITIVE_LR.ok(v) for v in self.values), "train.lr.values", f"all {POSITIVE_LR.rule}",
                  self.values)


@dataclass
class LabelSmoothingConfig:
    """Label smoothing: in the loss or on the one-hot targets on the fly (docs/seed-log.md "EXP8", "EXP7")."""

    factor: float = setting(0.0, unit_interval(closed_low=True), knob="label_smoothing")
    mode: Literal["loss", "labels"] = setting("loss", knob="smoothing_mode")


@dataclass
class AugmentationConfig:
    """Random train-time augmentation.

    Where each suits (benchmarks/panel.py measures them on several datasets; docs/methods.md "The demo's levers"):
    - flip (left-right mirror): photos, clothes, objects, whose mirror image is the same class; wrong
      for digits, letters and text, where a mirror is another symbol or none;
    - shift (a fraction of the side, zero-padded): almost any image data; less where position is the
      label (a centred-crop dataset shifted by more than its margin);
    - erase: many images per class; on classes of a handful of images it hides much of what little
      there is to learn;
    - mixup/cutmix: long runs (they slow convergence; mix_off_last_epochs ends on clean images).
    """

    flip: bool = True
    shift: float = setting(0.1, Bound(lambda v: 0.0 <= v < 0.5, ">= 0 and < 0.5"))
    # Random erasing (Zhong et al. 2020): the chance that an image gets one box, 2-40% of its area with
    # aspect 0.3-3.3, filled with uniform noise over the batch's value range; 0 is off.
    erase: float = setting(0.0, between(0, 1), knob="random_erasing")
    # Batch mixing: Beta(alpha, alpha) mixing weights; 0 is off. With both on, each batch uses one of them.
    mixup: float = setting(0.0, MIX_ALPHA, knob="mixup")
    cutmix: float = setting(0.0, MIX_ALPHA, knob="cutmix")
    # Switch mixup/cutmix off for the last k epochs (train on clean images at the end).
    mix_off_last_epochs: int = setting(0, knob="mix_off_last_epochs")

    def check(self, epochs: int) -> None:
        """Mixing is switched off for at most the whole run."""
        _need(0 <= self.mix_off_last_epochs <= epochs, "train.augmentation.mix_off_last_epochs",
              f">= 0 and <= train.epochs ({epochs})", self.mix_off_last_epochs)


@dataclass
class LossConfig(RegistryChoice):
    """The training loss on logits: a name from longtail.losses, with builder keyword arguments."""

    name: str = setting("cross_entropy", knob="loss")
    args: dict[str, Any] = setting(factory=dict, knob="loss_args")

    def check(self) -> None:
        """The name is a registered loss and its builder accepts the arguments."""
        check_loss(self.name, self.args)


# train.precision's values.
Precision = Literal["float32", "mixed_bfloat16", "mixed_float16", "auto"]


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = setting(12, between(1, EPOCHS_MAX), knob="epochs")
    batch_size: int = setting(128, between(1, BATCH_SIZE_MAX), knob="batch_size")
    # The fewest optimizer steps an epoch (0: off). A train split too small for batch_size to give that
    # many is trained in smaller batches: the largest power of two that does, but not below
    # MIN_ADAPTIVE_BATCH (longtail.training.factories.batch_for_steps). Suits small folders and short
    # runs, where 2-4 steps an epoch leave the network, its batch-norm statistics and its weight
    # average untrained; a split of 12k images at batch 128 (93 steps) is untouched by 16.
    min_steps_per_epoch: int = setting(0, between(0, 1024))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr: LRConfig = field(default_factory=LRConfig)
    label_smoothing: LabelSmoothingConfig = field(default_factory=LabelSmoothingConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    seed: int = setting(0, between(0, SEED_MAX), knob="seed")
    gpus: int = setting(0, at_least(0, " (0 means every visible GPU)"), knob="gpus")
    # The dtype policy: float32, bfloat16 or float16 compute with float32 weights, logits and losses, or
    # auto (longtail.precision.resolve_precision: what the training machine's GPUs or CPU compute fast).
    precision: Precision = setting("float32", knob="precision")
    # XLA-compiled training steps (Keras jit_compile): true, false, or auto
    # (longtail.precision.resolve_jit_compile: a one-device training in float32 on a CPU without AVX-512,
    # where it was measured to pay). XLA cannot compile a step mirrored across replicas, so true with
    # several is refused.
    jit_compile: bool | Literal["auto"] = setting(False, knob="jit_compile", text=True)
    memory_budget_mb: int = setting(2048, at_least(0))
    deterministic: bool = False
    loss: LossConfig = field(default_factory=LossConfig)


# evaluate.target_prior's values (longtail.scoring scores under them).
TargetPrior = Literal["balanced", "train"]


@dataclass
class EvaluateConfig:
    """The evaluation gate and prediction options."""

    min_macro_f1: float = setting(0.0, between(0, 1), knob="min_macro_f1")
    # Test-time augmentation at evaluation, the post-hoc tau's choice and the submission: each image's
    # softmax averaged with its left-right mirror's (tta), and with those of the image (and its mirror)
    # moved right, left, down and up by tta_shift of the image's side, as train.augmentation.shift is
    # (round(tta_shift * side) px, at least 1; 0: no shifted views; 10 views in all with both).
    # Flip TTA suits images whose mirror is the same class (photos, clothes) and hurts where it is not
    # (digits, text); shift TTA suits a model trained with shifts (train.augmentation.shift).
    tta: bool = False
    tta_shift: float = setting(0.0, between(0, 0.25))
    # Post-hoc logit adjustment: predict with logits - tau * log(train prior); "tune" picks tau on val
    # (the best val figure's tau when its gain over tau 0 is clear of the split's noise, else 0).
    posthoc_tau: float | Literal["tune"] = setting(
        0.0, Bound(lambda v: v == "tune" or 0.0 <= v <= 10.0, "between 0 and 10, or tune"), knob="posthoc_tau",
        text=True)
    # The test distribution every decision aims at: "balanced" weighs each val image 1/(its class's
    # val count), the unbiased estimate of macro-F1 on a class-balanced test set; "train" scores
    # val as drawn, for a test set drawn like the training set.
    target_prior: TargetPrior = setting("balanced", knob="target_prior")


@dataclass
class ExperimentConfig:
    """One experiment: one pipeline run, one MLflow run."""

    name: str = setting("experiment", Bound(lambda v: bool(v.strip()), "a non-empty string"), knob="name")
    experiment: str = setting("longtail", knob="experiment")
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def check(self) -> None:
        """The rules that span fields: each section's against the run's length, and the registry choices."""
        epochs = self.train.epochs
        self.train.lr.check(epochs)
        self.weights.check(epochs)
        self.train.augmentation.check(epochs)
        self.model.check()
        self.train.loss.check()


# Fields that were renamed: the old key's one-line error gives the new spelling.
RENAMED = {
    "train.mixed_precision": "write train.precision: mixed_float16 (true), float32 (false), "
                             "or auto (what the machine computes fast)",
}


def _check_bounds(section: Any, prefix: str = "") -> None:
    """Every field's declared bounds, section by section in declaration order."""
    for f in dataclasses.fields(section):
        value, where = getattr(section, f.name), f"{prefix}{f.name}"
        for bound in f.metadata.get("bounds", ()):
            _need(bound.ok(value), where, bound.rule, value)
        if dataclasses.is_dataclass(value):
            _check_bounds(value, f"{where}.")


def config_from_dict(raw: dict[str, Any] | None) -> ExperimentConfig:
    """Validate a plain mapping (parsed YAML) into an ExperimentConfig.

    Raises:
        ConfigError: naming the first bad field and what it must be.
    """
    refuse_shared(raw or {}, "", set())
    cfg = build_dataclass(ExperimentConfig, raw or {}, RENAMED)
    _check_bounds(cfg)
    cfg.check()
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment YAML file."""
    path = Path(path)
    raw = read_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    raw = apply_overrides(raw, overrides or [])
    if "name" not in raw:
        raw["name"] = path.stem
    return config_from_dict(raw)


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data (every field, defaults included)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (saved next to each model)."""
    return write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': {'power': 2.5}}} -> {'train.lr.power': 2.5}: MLflow params, sweep diffs."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v and k != "args":
            out.update(flatten(v, key))
        elif isinstance(v, dict):
            for ak, av in v.items():
                out[f"{key}.{ak}"] = av
        else:
            out[key] = v
    return out


def split_seed(cfg: ExperimentConfig) -> int:
    """The train/val split seed: data.seed, or train.seed for a config that sets only that (deprecated)."""
    if cfg.data.seed is not None:
        return cfg.data.seed
    if cfg.train.seed != TrainConfig.seed:
        logging.getLogger(__name__).warning(
            "%s: the split seed comes from train.seed (%d); set data.seed instead. With train.seed alone, "
            "configs that differ only in it share one ingest in a sweep, split with the first one's seed",
            cfg.name, cfg.train.seed)
    return cfg.train.seed


def ingest_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The keyword arguments of longtail.ingest.ingest that an experiment config determines."""
    d = cfg.data
    return {"image_size": d.image_size, "val_fraction": d.val_fraction, "seed": split_seed(cfg),
            "min_per_class": d.min_per_class, "max_classes": d.max_classes, "resize": d.resize,
            "clahe": d.clahe, "white_balance": d.white_balance}
