"""Tracking never hangs or misleads: /health must say MLflow's OK, every MLflow call has one bounded
retry budget, predict writes nothing for a dead server and says when a CSV was written but not
logged, and no password in a tracking URI is ever printed.

The servers here are real HTTP servers on localhost standing in for a broken MLflow (one that
answers 500, or is something else entirely); a real MLflow server cannot be made to fail this way.
"""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from digits_models import make_digits, train_model_dir

from longtail.cli import main
from longtail.credentials import redact
from longtail.errors import LongtailError
from longtail.model_dir import RunInfo
from longtail.tracking.env import CLIENT_LIMITS, bound_client_retries
from longtail.tracking.store import check_tracking_reachable, tracking_uri_from_env


class FakeServer:
    """Answers GET /health with `health` (status, body) and every other request with HTTP 500."""

    def __init__(self, health: tuple[int, bytes]) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                status, body = health if self.path == "/health" else (500, b"internal error")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    servers: list[FakeServer] = []

    def make(health: tuple[int, bytes]) -> FakeServer:
        servers.append(FakeServer(health))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def bounded_env(monkeypatch):
    """The CLI's limits, removed again after the test (whatever the test process had)."""
    for name in CLIENT_LIMITS:
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflows_ok_passes_the_probe(server_factory):
    server = server_factory((200, b"OK"))
    check_tracking_reachable(f"http://127.0.0.1:{server.port}")
    check_tracking_reachable(f"http://user:secret@127.0.0.1:{server.port}/")  # credentials are not sent to /health
    assert server.requests == ["GET /health", "GET /health"]


@pytest.mark.parametrize(
    ("health", "said"),
    [((500, b"boom"), "answered HTTP 500;"), ((200, b"<html>a proxy</html>"), "answered HTTP 200 without MLflow's OK"),
     ((404, b"not found"), "answered HTTP 404;")],
)
def test_any_other_answer_fails_the_probe_without_printing_the_password(server_factory, health, said):
    server = server_factory(health)
    with pytest.raises(LongtailError) as info:
        check_tracking_reachable(f"http://alice:s3cret@127.0.0.1:{server.port}")
    message = str(info.value)
    assert f"MLflow tracking server http://alice:***@127.0.0.1:{server.port} is not healthy" in message
    assert said in message and "s3cret" not in message


def test_an_unreachable_server_with_credentials_names_the_real_cause():
    port = closed_port()
    with pytest.raises(LongtailError) as info:
        check_tracking_reachable(f"http://alice:s3cret@127.0.0.1:{port}")
    assert "is unreachable (" in str(info.value) and "Connection refused" in str(info.value)
    assert "s3cret" not in str(info.value) and "nonnumeric port" not in str(info.value)  # the old, wrong cause


def test_redaction_keeps_everything_but_the_password():
    text = "API request to http://bob:pa55@mlflow:5000/api/2.0/x failed; s3://bucket/key and https://h/p stay"
    assert redact(text) == "API request to http://bob:***@mlflow:5000/api/2.0/x failed; " \
                                       "s3://bucket/key and https://h/p stay"


def test_the_cli_sets_one_bounded_budget_and_a_user_choice_wins(bounded_env, tmp_path):
    env: dict[str, str] = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    bound_client_retries(env)
    assert env == {**CLIENT_LIMITS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    assert main(["score", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 2
    assert {k: os.environ[k] for k in CLIENT_LIMITS} == CLIENT_LIMITS


def test_a_component_gets_the_same_budget_and_a_bare_uri(tmp_path):
    env = {"MLFLOW_TRACKING_URI": "http://alice:s3cret@mlflow:5000", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    assert tracking_uri_from_env(env) == "http://mlflow:5000"
    assert env == {**CLIENT_LIMITS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                   "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cret"}
    env = {}
    assert tracking_uri_from_env(env, home=tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert env == CLIENT_LIMITS


def test_every_component_that_opens_tracking_takes_the_budget_with_it():
    """The components open tracking only through tracking_uri_from_env (the CLI's budget, in the pod)."""
    from pathlib import Path

    from longtail.components import compare, evaluate, submit, train

    folder = Path(train.__file__).parent
    opening = {f.name for f in folder.glob("*.py") if "tracking" in f.read_text()}
    assert opening == {"compare.py", "evaluate.py", "submit.py", "train.py"}, opening
    # start_sweep and compare; evaluate; submit and skip_submission; train.
    calls = {compare: 2, evaluate: 1, submit: 2, train: 1}
    for module, n in calls.items():
        text = Path(module.__file__).read_text()
        assert "resolve_tracking_uri" not in text and "MLFLOW_TRACKING_URI" not in text, module.__name__
        assert text.count("tracking_uri_from_env(os.environ)") == n, module.__name__


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    data = make_digits(root / "data")
    return data, train_model_dir(data, root / "model", scale="scale", epochs=1)


@pytest.mark.slow
def test_predict_with_a_dead_server_writes_nothing(world, tmp_path, capsys, bounded_env):
    data, model = world
    RunInfo(f"http://u:pw@127.0.0.1:{closed_port()}", "longtail", "0" * 32).save(model)
    try:
        out = tmp_path / "sub.csv"
        assert main(["predict", str(model), str(data.test_h5), str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is unreachable" in err and "pw@" not in err and len(err.splitlines()) == 1
        assert not out.exists()
    finally:
        (model / "mlflow_run.json").unlink()


@pytest.mark.slow
def test_predict_says_the_csv_was_written_but_not_logged_after_a_bounded_retry(world, tmp_path, capsys, bounded_env,
                                                                             server_factory):
    data, model = world
    server = server_factory((200, b"OK"))  # healthy by its /health, but every API call fails with 500
    RunInfo(f"http://u:pw@127.0.0.1:{server.port}", "longtail", "0" * 32).save(model)
    try:
        out = tmp_path / "sub.csv"
        assert main(["predict", str(model), str(data.test_h5), str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert err.startswith(f"longtail predict: error: wrote {len(data.test_ids)} rows to {out}, but did not log "
                              "them to MLflow: ")
        assert "pw@" not in err
        assert out.is_file()
        api_calls = [r for r in server.requests if not r.endswith("/health")]
        # One call (log_batch) failing: the first try and MLFLOW_HTTP_REQUEST_MAX_RETRIES more, nothing else.
        assert len(api_calls) == 1 + int(CLIENT_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), api_calls
    finally:
        (model / "mlflow_run.json").unlink()
