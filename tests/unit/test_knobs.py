"""Every pipeline signature against the one knob list (longtail.knobs.KNOBS): names, types and defaults."""

import inspect
from pathlib import Path

import pytest

from longtail.components.config import resolve_config
from longtail.config import load_config
from longtail.knobs import KNOB_TYPES, KNOBS, TEXT_KNOBS, knob_values, pod_gpus
from longtail.pipelines import knob_signatures
from longtail.pipelines.sweep import create_sweep_pipeline
from longtail.pipelines.training import create_pipeline

REPO = Path(__file__).resolve().parents[2]
# Training-pipeline parameters that are not knobs: the data, the config the knobs are set on, the MLflow parent.
TRAINING_EXTRAS = {"data_uri", "test_uri", "base_config", "parent_run_id"}


@pytest.fixture(scope="module")
def demo():
    return load_config(REPO / "experiments" / "demo.yaml")


def inputs(component):
    return {name: spec.type for name, spec in component.component_spec.inputs.items()}


def test_the_training_pipeline_takes_exactly_the_knobs(demo):
    params = inputs(create_pipeline(demo))
    assert set(params) - TRAINING_EXTRAS == set(KNOBS)


def test_the_resolve_step_types_every_knob_as_the_pipeline_does(demo):
    pipeline, step = inputs(create_pipeline(demo)), inputs(resolve_config)
    assert set(step) == set(KNOBS) | {"base_config"}
    assert {k: step[k] for k in KNOBS} == {k: pipeline[k] for k in KNOBS}


def test_knob_parameter_types_match_the_config_values(demo):
    kfp_type = {bool: "Boolean", int: "Integer", float: "Float", str: "String", dict: "Dict"}
    values = knob_values(demo)
    step = inputs(resolve_config)
    for knob, value in values.items():
        expected = "String" if knob in TEXT_KNOBS else kfp_type[type(value)]
        assert step[knob] == expected, f"{knob}: {step[knob]} for a {type(value).__name__} config value"


def test_the_training_pipeline_defaults_are_the_config_knob_values(demo):
    pipeline = create_pipeline(demo)
    defaults = {name: p.default for name, p in inspect.signature(pipeline.pipeline_func).parameters.items()}
    expected = knob_values(demo)
    expected["gpus"] = pod_gpus(expected["gpus"])
    assert {k: defaults[k] for k in KNOBS} == expected


def test_the_sweep_pipeline_takes_whole_configs_not_knobs(demo):
    params = inputs(create_sweep_pipeline(demo))
    assert set(params) & set(KNOBS) == {"experiment"}
    assert "configs" in params


def test_the_written_knob_parameters_are_the_declared_ones():
    """resolve_config and the training pipeline spell their knob parameters out (KFP embeds a component's
    source); the generator writes them from the config declaration, and this keeps the files honest."""
    stale = knob_signatures.stale_files()
    assert not stale, f"knob parameters out of date in {', '.join(map(str, stale))}; run: {knob_signatures.COMMAND}"


def test_a_new_knob_is_appended_and_a_removed_one_dropped(monkeypatch):
    """Adding a knob is its declaration in longtail.config plus a run of the generator: the existing
    parameters keep their order, so a compiled pipeline changes only where the new knob goes."""
    types = {k: t for k, t in KNOB_TYPES.items() if k != "seed"} | {"new_knob": float}
    monkeypatch.setattr(knob_signatures, "KNOB_TYPES", types)
    for path in knob_signatures.BLOCKS:
        text = path.read_text()
        out = knob_signatures.generated(path, text)
        params = [line.strip() for line in out.splitlines() if line.strip().startswith(("seed:", "new_knob:"))]
        default = "" if "components" in path.parts else ' = k["new_knob"]'
        assert params == [f"new_knob: float{default},"]
        assert out.index("target_prior: str") < out.index("new_knob: float")
        assert knob_signatures.generated(path, out) == out


def test_the_generator_command_checks_and_writes(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "config.py"
    real = next(iter(knob_signatures.BLOCKS))
    fake.write_text(real.read_text().replace("    weight_beta: float,\n", ""))
    monkeypatch.setattr(knob_signatures, "BLOCKS", {fake: knob_signatures.BLOCKS[real]})
    assert knob_signatures.main([]) == 1
    assert knob_signatures.COMMAND in capsys.readouterr().err
    assert knob_signatures.main(["--write"]) == 0
    assert "    weight_beta: float,\n" in fake.read_text() and knob_signatures.main([]) == 0


def test_knob_types_come_from_the_field_declarations():
    some = {k: KNOB_TYPES[k] for k in ("image_size", "weight_beta", "clahe", "resize", "loss_args", "posthoc_tau")}
    assert some == {"image_size": int, "weight_beta": float, "clahe": bool, "resize": str, "loss_args": dict,
                    "posthoc_tau": str}
