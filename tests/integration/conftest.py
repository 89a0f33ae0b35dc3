"""Fixtures for the real services the integration tests talk to on 127.0.0.1: S3 servers (SeaweedFS,
moto), MLflow servers and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# moto accepts any credentials; these only keep boto3 from looking for real ones (MotoServer's own env).
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


class MlflowServer:
    """`mlflow server` in its own process group (server, workers and job consumers stop together).

    Its store is SQLite in `root` unless `backend_store_uri` names another (PostgreSQL); the URI
    reaches the server through MLFLOW_BACKEND_STORE_URI, so a password is never on a command line.
    """

    def __init__(self, root: Path, artifacts: str, s3_endpoint: str | None = None,
                 backend_store_uri: str | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
                    "--artifacts-destination", artifacts, "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(workers)]
        self.env = {**os.environ, **({"MLFLOW_S3_ENDPOINT_URL": s3_endpoint} if s3_endpoint else {}),
                    "MLFLOW_BACKEND_STORE_URI": backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"}
        self.log = root / "mlflow-server.log"
        self.proc = None

    def start(self, timeout: float = 90.0) -> str:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1).close()
                return self.url
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        raise RuntimeError(f"mlflow server did not answer within {timeout:.0f}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc = None


REPO = Path(__file__).resolve().parents[2]


class SeaweedServer:
    """SeaweedFS (`weed server -s3`, scripts/s3-server.sh) as its own process group: a real S3 server
    that enforces credentials. Its throwaway keys are generated on first start and kept in state_dir;
    kill() stops it abruptly, start() brings it back on the same port with its objects intact."""

    def __init__(self, state_dir: Path, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pgid = 0

    def _script(self, action: str) -> None:
        subprocess.run([str(REPO / "scripts" / "s3-server.sh"), action, str(self.state_dir), str(self.port)],
                       check=True, timeout=120, env={**os.environ, "WEED": str(Path(sys.executable).parent / "weed")})

    def start(self) -> str:
        self._script("up")
        self.pgid = int((self.state_dir / "weed.pid").read_text())
        return self.url

    def stop(self) -> None:
        self._script("down")
        # Also when the state folder went first (another pytest on this machine pruned its basetemp).
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole server (master, volume, filer, S3 gateway): no clean shutdown."""
        if self.pgid <= 0:  # never started: killpg(0) would hit this test process's own group
            return
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @property
    def credentials(self) -> dict[str, str]:
        """The server's keys as environment variables (parsed from its s3.env)."""
        words = (self.state_dir / "s3.env").read_text().split()
        return dict(w.split("=", 1) for w in words if "=" in w)


class PostgresServer:
    """A PostgreSQL cluster of the test's own (scripts/pg-server.sh: Debian's package, initdb and pg_ctl
    on a free port, run as the `postgres` user when the tests run as root). kill() stops it abruptly
    (immediate shutdown: no checkpoint), start() brings it back on the same port with its data."""

    def __init__(self, port: int | None = None) -> None:
        # Not under pytest's basetemp: as root that is private to root, and the cluster runs as postgres.
        self.state_dir = Path(tempfile.mkdtemp(prefix="longtail-pg-"))
        self.port = port or free_port()

    def _script(self, action: str) -> None:
        subprocess.run([str(REPO / "scripts" / "pg-server.sh"), action, str(self.state_dir), str(self.port)],
                       check=True, timeout=120)

    def start(self) -> str:
        """Start (creating the cluster the first time); returns the store's URI, password included."""
        self._script("up")
        return self.store_uri

    def kill(self) -> None:
        self._script("kill")

    def stop(self) -> None:
        self._script("down")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    @property
    def store_uri(self) -> str:
        """postgresql+psycopg://longtail:<password>@127.0.0.1:<port>/mlflow, from the cluster's pg.env."""
        line = (self.state_dir / "pg.env").read_text().split()[-1]
        return line.split("=", 1)[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A started PostgreSQL server for the session; its store URI is postgres.store_uri."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A started SeaweedFS S3 server for the session (the real S3 server here; credentials enforced).
    Pass server.credentials to the code under test; nothing is exported to the environment."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        # The session's data is thrown away: no clean shutdown to wait for (weed's takes up to 10 s).
        server.kill()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `containers` build on step images and a container engine (`make test-containers`):
    they run only when asked for with -m containers, never in the default `make test` run."""
    if "containers" in (config.getoption("-m") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("containers") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(scope="session")
def s3_server(seaweedfs: SeaweedServer) -> Iterator[str]:
    """The endpoint URL of the session's SeaweedFS server (the real S3 server that stands in for MinIO),
    with its keys in the environment for as long as it runs. Pass the URL explicitly
    (S3Settings(endpoint_url=...)) or set S3_ENDPOINT_URL with monkeypatch in the test."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in seaweedfs.credentials.items():
            mp.setenv(name, value)
        # Real AWS settings on the host must not leak into tests against the local server.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        yield seaweedfs.url


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the session's S3 server; returns its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def moto_server(s3_server: str, tmp_path: Path) -> Iterator[MotoServer]:
    """A private, started moto S3 server for one test, which fault tests may stop() and start() again
    (on the same port; its objects are lost). moto accepts the keys s3_server put in the environment.

    moto stays here, and only here, for the fault that must land at an exact point inside one call
    (test_endpoint_killed_mid_ingest stops the server between two batches, from inside ingest):
    it is one process that stops at once, where SeaweedFS is four servers (master, volume, filer,
    S3 gateway) that go down one after another. The container run's S3 kill uses SeaweedFS."""
    server = MotoServer(log_dir=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# A pipeline run in seconds: the demo config shrunk to a tiny model on 16x16 digits, no gate.
TINY_PIPELINE = ["model.name=small_cnn", "model.args={width: 8}", "train.epochs=2", "train.batch_size=32",
                 "data.image_size=16", "train.lr.schedule=constant", "train.lr.initial=0.003",
                 "train.optimizer.name=adam", "evaluate.min_macro_f1=0.0",
                 "train.optimizer.ema=0.0",  # weight averaging over 2 tiny epochs would keep the initial weights
                 # demo.yaml's XLA (auto) compiles for ~4.5 s per tiny training, twice its 2 epochs;
                 # tests/unit/test_precision.py trains with and without it.
                 "train.jit_compile=false"]


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
