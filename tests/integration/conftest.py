"""Fixtures for the real services the integration tests talk to: a moto S3 server process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# moto accepts any credentials; these only keep boto3 from looking for real ones.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """`python -m moto.server` as its own process: the S3 endpoint the tests use in place of MinIO.

    Fault tests can stop() it mid-run and start() it again on the same port (its state is lost).
    """

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> str:
        """Start the process and wait until it answers HTTP; returns the endpoint URL."""
        log = open(self.log_dir / f"moto-{self.port}.log", "ab") if self.log_dir else subprocess.DEVNULL
        env = {**os.environ, **DUMMY_CREDENTIALS}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode} (port {self.port})")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return self.url
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> None:
        """Terminate the process (kill if it lingers) and wait for it."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server process shared by the session, with dummy credentials
    in the environment for as long as it runs. Pass the URL explicitly (S3Settings(endpoint_url=...))
    or set S3_ENDPOINT_URL with monkeypatch in the test."""
    server = MotoServer(log_dir=tmp_path_factory.mktemp("moto"))
    url = server.start()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in DUMMY_CREDENTIALS.items():
            mp.setenv(name, value)
        # Real AWS settings on the host must not leak into tests against the stand-in.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the session's S3 server; returns its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def moto_server(s3_server: str, tmp_path: Path) -> Iterator[MotoServer]:
    """A private, started S3 server process for one test, which fault tests may stop() and start()
    again (on the same port; its objects are lost). Dummy credentials come from s3_server."""
    server = MotoServer(log_dir=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# A pipeline run in seconds: the demo config shrunk to a tiny model on 16x16 digits, no gate.
TINY_PIPELINE = ["model.name=small_cnn", "model.args={width: 8}", "train.epochs=2", "train.batch_size=32",
                 "data.image_size=16", "train.lr.schedule=constant", "train.lr.initial=0.003",
                 "train.optimizer.name=adam", "evaluate.min_macro_f1=0.0"]


@pytest.fixture
def tiny_overrides() -> list[str]:
    """--set overrides that make experiments/demo.yaml a seconds-long pipeline run."""
    return list(TINY_PIPELINE)


@pytest.fixture(scope="session")
def digits_lt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real long-tailed dataset (scikit-learn's digits, imbalance 10): train/, test/, test_labels.csv."""
    from longtail.datasets import make_digits_lt

    root = tmp_path_factory.mktemp("digits-lt")
    make_digits_lt(root, imbalance=10)
    return root
