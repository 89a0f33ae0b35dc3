"""The kfp.local session: every patch and environment change it makes is undone on exit, also on error."""

from __future__ import annotations

import builtins
import importlib
import inspect
import os
import warnings

import pytest
from kfp.local import docker_task_handler
from kfp.local.config import LocalExecutionConfig
from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

from longtail.errors import LongtailError
from longtail.pipelines.container_runner import run_container_then_remove
from longtail.pipelines.local_session import (
    PATCHED_SIGNATURES,
    local_session,
    one_of_artifacts,
    podman_wait_workaround,
)


def process_state() -> dict:
    """Everything a session may touch, as it stands."""
    return {
        "environ": dict(os.environ),
        "print": builtins.print,
        "one_of": OrchestratorUtils.__dict__["get_dag_output_artifacts"],
        "run_docker_container": docker_task_handler.run_docker_container,
        "local_config": LocalExecutionConfig.instance,
        "warning_filters": list(warnings.filters),
    }


def test_the_session_undoes_everything_it_changed(tmp_path):
    before = process_state()
    with local_session(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}") as uri:
        inside = process_state()
        assert os.environ["MLFLOW_TRACKING_URI"] == uri
        assert inside["one_of"] is not before["one_of"] and inside["local_config"] is not None
        assert len(inside["warning_filters"]) > len(before["warning_filters"])
        builtins.print = lambda *a, **k: None  # what kfp.local's parallel tasks leave behind
        os.environ["LONGTAIL_SESSION_TEST"] = "1"
    assert process_state() == before


def test_the_session_undoes_everything_when_the_run_fails(tmp_path):
    before = process_state()
    with pytest.raises(RuntimeError, match="a step failed"):
        with local_session(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}"):
            builtins.print = lambda *a, **k: None
            raise RuntimeError("a step failed")
    assert process_state() == before


def test_a_session_that_cannot_start_leaves_nothing_behind(tmp_path):
    before = process_state()
    with pytest.raises(LongtailError, match="needs an MLflow tracking server"):
        with local_session(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", runner="container"):
            pass
    assert process_state() == before


def test_each_workaround_is_installed_only_inside_its_block():
    original = docker_task_handler.run_docker_container
    with podman_wait_workaround():
        assert docker_task_handler.run_docker_container is run_container_then_remove
    assert docker_task_handler.run_docker_container is original
    with one_of_artifacts():
        assert OrchestratorUtils.get_dag_output_artifacts.__func__.__module__ == "longtail.pipelines.local_session"
    assert OrchestratorUtils.get_dag_output_artifacts.__func__.__module__ == "kfp.local.orchestrator.orchestrator_utils"


@pytest.mark.parametrize("target", sorted(PATCHED_SIGNATURES, key=str), ids=lambda t: t[-1])
def test_kfp_still_has_the_signature_each_workaround_was_written_against(target):
    """When this fails, kfp changed a function a workaround replaces: check the workaround (and its
    upstream issue) against the new kfp, then record the new signature in pipelines/local_session.py."""
    module, cls, name = target
    owner = importlib.import_module(module)
    function = getattr(getattr(owner, cls) if cls else owner, name)
    assert str(inspect.signature(function)) == PATCHED_SIGNATURES[target]
