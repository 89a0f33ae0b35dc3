"""Every pipeline signature against the one knob list (longtail.knobs.KNOBS): names, types and defaults."""

import inspect
from pathlib import Path

import pytest

from longtail.components.config import resolve_config
from longtail.config import load_config
from longtail.knobs import KNOBS, TEXT_KNOBS, knob_values, pod_gpus
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
