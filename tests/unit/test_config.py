"""Experiment config: defaults, validation messages that name the field, overrides, round trip."""

import dataclasses
import typing

import pytest
import yaml

from longtail import name_registry
from longtail.config import (
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    flatten,
    load_config,
    save_config,
)
from longtail.config_overrides import apply_overrides
from longtail.errors import ConfigError
from longtail.knobs import KNOBS, apply_knobs, knob_values, without_nulls


def test_empty_config_is_fully_defaulted():
    cfg = config_from_dict({})
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.train.lr.schedule == "poly" and cfg.train.lr.power == 2.5
    assert cfg.preprocess.scale == "scale"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"lr": {"power": -1}}}, "config field train.lr.power must be > 0, got -1"),
        ({"train": {"epochs": "ten"}}, "config field train.epochs must be an integer, got 'ten'"),
        ({"train": {"epocs": 3}}, "unknown config field train.epocs; did you mean train.epochs?"),
        ({"preprocess": {"scale": "255"}}, "config field preprocess.scale must be one of scale, mean_subtraction"),
        ({"train": {"label_smoothing": {"mode": "data"}}}, "train.label_smoothing.mode must be one of loss, labels"),
        ({"weights": {"scheme": "inverse"}}, "weights.scheme must be one of none, inverse-frequency"),
        ({"train": {"lr": {"schedule": "step", "boundaries": [10, 20], "values": [0.1]}}},
         "train.lr.values must be one longer than train.lr.boundaries"),
        ({"train": {"lr": {"schedule": "step", "boundaries": [20, 10], "values": [0.1, 0.01, 0.001]}}},
         "train.lr.boundaries must be strictly increasing"),
        ({"data": {"clahe": "yes"}}, "config field data.clahe must be true or false"),
        ({"train": "fast"}, "config field train must be a mapping"),
    ],
)
def test_bad_fields_name_the_field_and_the_rule(raw, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_int_is_accepted_where_a_float_is_expected():
    assert config_from_dict({"train": {"lr": {"initial": 1}}}).train.lr.initial == 1.0


def test_overrides_parse_yaml_values_and_nest(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 40}}))
    cfg = load_config(path, ["train.epochs=2", "train.lr.boundaries=[1, 2]", "train.lr.values=[0.1,0.01,0.001]",
                             "train.lr.schedule=step", "data.clahe=true"])
    assert cfg.train.epochs == 2 and cfg.train.lr.boundaries == [1, 2] and cfg.data.clahe is True
    assert cfg.name == "exp", "name defaults to the file's stem"


def test_override_without_equals_is_a_clear_error():
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides({}, ["train.epochs"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_reloads_identically(tmp_path):
    cfg = config_from_dict({"name": "x", "train": {"epochs": 3, "lr": {"schedule": "cosine"}}})
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg


def test_flatten_gives_dotted_params():
    flat = flatten(config_to_dict(config_from_dict({"model": {"args": {"depth": 20}}})))
    assert flat["train.lr.power"] == 2.5 and flat["model.args.depth"] == 20


def test_knobs_round_trip_and_validate():
    cfg = config_from_dict({"train": {"epochs": 7}})
    knobs = knob_values(cfg)
    assert set(knobs) == set(KNOBS) and knobs["epochs"] == 7
    changed = apply_knobs(without_nulls(config_to_dict(cfg)), {**knobs, "label_smoothing": 0.1, "epochs": 2})
    assert changed.train.label_smoothing.factor == 0.1 and changed.train.epochs == 2
    with pytest.raises(ConfigError, match="train.lr.power"):
        apply_knobs({}, {"lr_power": 0.0})
    with pytest.raises(ConfigError, match="unknown pipeline parameter 'epoch'"):
        apply_knobs({}, {"epoch": 1})


def test_numbers_that_crossed_kfp_as_doubles_come_back_as_integers():
    cfg = config_from_dict({"train": {"epochs": 3.0, "lr": {"boundaries": [2.0]}, },
                            "model": {"args": {"filters": [16.0, 32.0], "dropout": 0.5}}})
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.model.args == {"filters": [16, 32], "dropout": 0.5}
    assert all(isinstance(f, int) for f in cfg.model.args["filters"])
    with pytest.raises(ConfigError, match="train.epochs must be an integer, got 2.5"):
        config_from_dict({"train": {"epochs": 2.5}})


SECTIONS = {
    "name": "name: *a",
    "experiment": "experiment: *a",
    "data": "data: {resize: *a}",
    "preprocess": "preprocess: {scale: *a}",
    "weights": "weights: {scheme: *a}",
    "model": "model: {name: resnet_cifar, args: {widths: *a}}",
    "train": "train: {lr: {values: *a}}",
    "evaluate": "evaluate: {tta: *a}",
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_an_alias_in_any_section_is_refused_before_anything_expands(tmp_path, section):
    path = tmp_path / "alias.yaml"
    path.write_text("anchors: &a [1]\n" + SECTIONS[section] + "\n")
    with pytest.raises(ConfigError, match=r"YAML alias \*a at line 2 is not allowed in a config; write the value out"):
        load_config(path)


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    # The classic bomb: each line names the previous one nine times (9^9 leaves from ~540 bytes).
    lines = ["l0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("model:\n  name: resnet_cifar\n  args:\n" + "".join(f"    {line}\n" for line in lines))
    assert path.stat().st_size < 600
    with pytest.raises(ConfigError, match=r"YAML alias \*a0 at line 5 is not allowed"):
        load_config(path)
    path.write_text("train: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"YAML alias \*a at line 1 is not allowed"):
        load_config(path, ["model.args.x=*a"])


def test_shared_values_from_a_mapping_are_refused_too():
    leaf = [1.0] * 9
    for _ in range(8):
        leaf = [leaf] * 9  # what yaml.safe_load makes of the bomb: 9^9 leaves through shared lists
    with pytest.raises(ConfigError, match=r"config field model.args.widths\[0\]\[0\]\[0\]\[0\]\[0\]\[0\]\[0\]\[1\] repeats a shared"):
        config_from_dict({"model": {"args": {"widths": leaf}}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr.initial=.inf", "config field train.lr.initial must be a finite number, got inf"),
        ("train.optimizer.weight_decay=.inf", "config field train.optimizer.weight_decay must be a finite number"),
        ("weights.beta=.nan", "config field weights.beta must be a finite number, got nan"),
        ("train.lr.values=[0.1, .inf]", r"config field train.lr.values\[1\] must be a finite number"),
        ("model.args.dropout=-.inf", "config field model.args.dropout must be a finite number, got -inf"),
        ("train.epochs=1000000", "config field train.epochs must be between 1 and 10000, got 1000000"),
        ("train.batch_size=10000000", "config field train.batch_size must be between 1 and 65536"),
        ("data.image_size=100000", "config field data.image_size must be between 8 and 1024, got 100000"),
        ("evaluate.tta_shift=-1", "config field evaluate.tta_shift must be between 0 and 0.25, got -1"),
        ("evaluate.tta_shift=2", "config field evaluate.tta_shift must be between 0 and 0.25, got 2"),
        ("train.epochs=[1, 2", r"override 'train.epochs=\[1, 2': the value is not valid YAML: "),
    ],
)
def test_values_that_validate_but_make_no_sense_are_refused(tmp_path, override, message):
    path = tmp_path / "exp.yaml"
    path.write_text("train: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path, [override])
    assert "\n" not in str(e.value)


def test_a_non_utf8_config_is_a_one_line_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"config file .*latin1.yaml is not UTF-8 text \(byte 9\); save it as UTF-8"):
        load_config(path)


def test_cli_errors_for_bad_configs_are_one_line_exit_2(tmp_path, capsys):
    from longtail.cli import main

    path = tmp_path / "exp.yaml"
    path.write_bytes(b"train: {epochs: \xff}\n")
    split = ["--train", str(tmp_path / "train.h5"), "--val", str(tmp_path / "val.h5"), "--out", str(tmp_path / "m")]
    assert main(["train", str(path), *split]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("longtail train: error: config file") and "not UTF-8" in err and len(err.splitlines()) == 1
    path.write_text("train: {epochs: 2}\n")
    assert main(["train", str(path), *split, "--set", "train.epochs=[1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the value is not valid YAML" in err and len(err.splitlines()) == 1


def test_sweep_files_and_grids_get_the_same_one_line_errors(tmp_path):
    from longtail.sweep_plan import load_sweep

    latin1 = tmp_path / "sweep.yaml"
    latin1.write_bytes("experiments: [{name: caf\u00e9}]\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"config file .*sweep.yaml is not UTF-8 text"):
        load_sweep([latin1])
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("base: &b exp.yaml\nexperiments: [{name: a, set: *b}]\n")
    with pytest.raises(ConfigError, match=r"YAML alias \*b at line 2 is not allowed"):
        load_sweep([bomb])
    exp = tmp_path / "exp.yaml"
    exp.write_text("train: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"grid axis 'train.epochs=1,\[2': value '\[2' is not valid YAML"):
        load_sweep([exp], grid=["train.epochs=1,[2"])


def test_long_tail_fields_default_to_plain_training_and_are_params():
    cfg = config_from_dict({})
    assert (cfg.train.loss.name, cfg.train.loss.args) == ("cross_entropy", {})
    assert cfg.weights.start_epoch == 0 and cfg.evaluate.posthoc_tau == 0.0
    assert (cfg.train.augmentation.mixup, cfg.train.augmentation.cutmix) == (0.0, 0.0)
    flat = flatten(config_to_dict(config_from_dict({"train": {"loss": {"name": "ldam", "args": {"scale": 2.0}}}})))
    assert flat["train.loss.name"] == "ldam" and flat["train.loss.args.scale"] == 2.0
    assert {"weights.start_epoch", "train.augmentation.mixup", "train.augmentation.cutmix",
            "train.augmentation.mix_off_last_epochs", "train.optimizer.weight_decay", "evaluate.posthoc_tau"} <= set(flat)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("weights.start_epoch=12", "config field weights.start_epoch must be >= 0 and < train.epochs (12), got 12"),
        ("train.augmentation.mixup=-0.2", "config field train.augmentation.mixup must be between 0 (off) and 10, got -0.2"),
        ("train.augmentation.cutmix=lots", "config field train.augmentation.cutmix must be a number, got 'lots'"),
        ("train.augmentation.mix_off_last_epochs=13", "mix_off_last_epochs must be >= 0 and <= train.epochs (12)"),
        ("evaluate.posthoc_tau=tuned", "config field evaluate.posthoc_tau must be float or 'tune', got 'tuned'"),
        ("evaluate.posthoc_tau=-1", "config field evaluate.posthoc_tau must be between 0 and 10, or tune, got -1.0"),
        ("train.loss.name=balanced", "config field train.loss.name: unknown loss 'balanced'"),
        ("train.loss.args.tau=-1", "config field train.loss.args.tau: loss 'cross_entropy' has no such argument"),
        ("train.optimizer.weight_decay=-1", "config field train.optimizer.weight_decay must be >= 0"),
    ],
)
def test_long_tail_fields_are_checked_with_one_line_errors(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_long_tail_fields_set_from_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\n")
    cfg = load_config(path, ["train.loss.name=logit_adjusted", "train.loss.args.tau=1.5", "evaluate.posthoc_tau=tune",
                             "weights.start_epoch=8", "train.augmentation.mixup=0.2"])
    assert cfg.train.loss.args == {"tau": 1.5} and cfg.evaluate.posthoc_tau == "tune"
    assert cfg.weights.start_epoch == 8 and cfg.train.augmentation.mixup == 0.2


def test_posthoc_tau_knob_is_a_string_parameter_read_as_yaml():
    knobs = knob_values(config_from_dict({"evaluate": {"posthoc_tau": "tune"}}))
    assert knobs["posthoc_tau"] == "tune" and knobs["loss"] == "cross_entropy"
    assert apply_knobs({}, {"posthoc_tau": "1.5"}).evaluate.posthoc_tau == 1.5
    assert apply_knobs({}, {"posthoc_tau": "tune", "loss": "focal", "loss_args": {"gamma": 1.0}}).train.loss.args == {"gamma": 1}
    with pytest.raises(ConfigError, match="evaluate.posthoc_tau"):
        apply_knobs({}, {"posthoc_tau": "always"})


@pytest.fixture
def no_model_source(monkeypatch):
    """An install where the model modules' source cannot be read (bytecode only, zipped): the case
    in which a mistyped model.name used to pass resolve-config and fail only in train, after ingest."""
    monkeypatch.setattr(name_registry, "declared_names", lambda folder, decorator: [])


def test_an_unknown_model_is_refused_even_where_no_model_source_can_be_read(no_model_source):
    with pytest.raises(ConfigError, match="config field model.name: unknown model 'resnet_cifarr'; known models: "
                                          "resnet50, resnet_cifar, small_cnn"):
        config_from_dict({"model": {"name": "resnet_cifarr"}})
    assert config_from_dict({"model": {"name": "small_cnn"}}).model.name == "small_cnn"


def test_the_resolve_step_refuses_an_unknown_model_or_loss_name():
    """resolve_config's body (apply_knobs) is where a pipeline run fails first: before ingest."""
    base = config_to_dict(config_from_dict({}))
    with pytest.raises(ConfigError, match="config field model.name: unknown model 'resnet_cifarr'"):
        apply_knobs(base, {"model_name": "resnet_cifarr"})
    with pytest.raises(ConfigError, match="config field train.loss.name: unknown loss 'focall'"):
        apply_knobs(base, {"loss": "focall"})


def test_every_bound_is_declared_beside_its_field():
    """Each field's bounds and knob live in its declaration (config.setting): the checker has no list of its own."""
    bounded = {f"{prefix}{f.name}" for prefix, f in declared_fields(ExperimentConfig) if f.metadata.get("bounds")}
    assert {"data.image_size", "weights.beta", "train.epochs", "train.lr.initial", "evaluate.posthoc_tau",
            "train.memory_budget_mb", "name"} <= bounded
    knobs = {f"{prefix}{f.name}" for prefix, f in declared_fields(ExperimentConfig) if f.metadata.get("knob")}
    assert knobs == set(KNOBS.values())


def declared_fields(section, prefix=""):
    for f in dataclasses.fields(section):
        yield prefix, f
        tp = typing.get_type_hints(section)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from declared_fields(tp, f"{prefix}{f.name}.")
