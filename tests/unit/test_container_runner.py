"""The container runner's checks, before any engine is reached (the runs themselves: make test-containers)."""

from __future__ import annotations

import socket

import pytest

from longtail.errors import LongtailError
from longtail.pipelines.container_runner import (
    FORWARDED_ENV,
    absolute_sources,
    check_runner,
    docker_host,
    make_docker_runner,
)


def test_unknown_runner_is_a_one_line_error():
    assert check_runner("container") == "container"
    with pytest.raises(LongtailError, match="unknown runner 'docker'; use one of: subprocess, container"):
        check_runner("docker")


def test_local_sources_become_absolute_and_s3_stays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_sources("data/train", "s3://b/raw/test") == [str(tmp_path / "data" / "train"), "s3://b/raw/test"]


def test_docker_host_prefers_the_environment():
    assert docker_host({"DOCKER_HOST": "tcp://10.0.0.1:2375"}) == "tcp://10.0.0.1:2375"
    assert docker_host({}).startswith("unix://")


def test_a_tracking_store_containers_cannot_reach_is_refused(tmp_path):
    with pytest.raises(LongtailError, match="needs an MLflow tracking server.*make services"):
        make_docker_runner(tmp_path / "root", [], f"sqlite:///{tmp_path}/mlflow.db", {})


def test_no_engine_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LongtailError, match=f"no container engine answers at tcp://127.0.0.1:{port}.*podman-service"):
        make_docker_runner(tmp_path / "root", [], "http://127.0.0.1:5000", {"DOCKER_HOST": f"tcp://127.0.0.1:{port}"})
    assert not (tmp_path / "root").exists(), "nothing is written before the engine answers"


def test_only_named_variables_reach_the_containers():
    assert "AWS_SECRET_ACCESS_KEY" in FORWARDED_ENV and "MLFLOW_TRACKING_URI" in FORWARDED_ENV
    assert not [name for name in FORWARDED_ENV if name.startswith(("HOME", "PATH", "PIP_", "DOCKER_"))]
