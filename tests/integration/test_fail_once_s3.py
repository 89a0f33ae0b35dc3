"""`longtail run` on an S3 endpoint that never answers fails within the one network budget, not once per
retry of the ingest step (docs/safety.md "Fail once")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DUMMY_CREDENTIALS

from longtail.storage import NETWORK_DEADLINE_S

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP port on 127.0.0.1 that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture
def refusing_endpoint() -> str:
    """A TCP port on 127.0.0.1 that nothing listens on: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("endpoint", ["silent_endpoint", "refusing_endpoint"])
def test_an_unreachable_endpoint_fails_the_run_once(endpoint, request, tmp_path):
    url = request.getfixturevalue(endpoint)
    env = {**os.environ, **DUMMY_CREDENTIALS, "S3_ENDPOINT_URL": url}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "longtail.cli", "run", str(REPO / "experiments" / "demo.yaml"),
                           "--data", "s3://longtail/train", "--test", "s3://longtail/test",
                           "--home", str(tmp_path / "home")],
                          capture_output=True, text=True, env=env, timeout=300)
    seconds = time.monotonic() - started
    # Was 219 s and more: the ingest step's 41 s, three times, with 30 s and 60 s between.
    assert seconds < NETWORK_DEADLINE_S + 30, seconds
    assert done.returncode == 2, done.stderr
    # One error line, the last; above it only the log's lines on the listing's own retries.
    lines = done.stderr.strip().splitlines()
    (line,) = [x for x in lines if x.startswith("longtail run: error: ")]
    assert line == lines[-1] and line.startswith("longtail run: error: cannot list s3://longtail/train/") and f"(endpoint {url})" in line
    assert not (tmp_path / "home" / "pipeline-root").exists()  # no step ran
