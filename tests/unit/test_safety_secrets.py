"""Safety rule "Secrets": a credential in any URI is never printed, logged or written (docs/safety.md
"Secrets"). The end-to-end check, every command against a real credentialed server, is
tests/integration/test_secrets_every_command.py."""

from __future__ import annotations

import io
import logging

import pytest
from test_tracking_bounds import FakeServer

from longtail.cli import main
from longtail.errors import LongtailError
from longtail.model_dir import RunInfo
from longtail.tracking.env import CLIENT_LIMITS
from longtail.tracking.store import ui_hint

SECRET = "Sup3rS3cret"


@pytest.mark.parametrize(("text", "shown"), [
    (f"http://bob:{SECRET}@mlflow:5000/api", "http://bob:***@mlflow:5000/api"),
    (f"https://{SECRET}@mlflow.example/x", "https://***@mlflow.example/x"),  # a token as the user name
    (f"s3://{SECRET}@bucket/key", "s3://***@bucket/key"),
    (f"postgresql://longtail:{SECRET}@db:5432/mlflow", "postgresql://longtail:***@db:5432/mlflow"),
    (f"mysql+pymysql://u:{SECRET}@db/m", "mysql+pymysql://u:***@db/m"),
    (f"http://bob:p@ss{SECRET}@host/", "http://bob:***@host/"),  # a raw @ in the password
    (f"'http://a:{SECRET}@h1' and (http://b:{SECRET}@h2)", "'http://a:***@h1' and (http://b:***@h2)"),
    ("mail bob@example.com; see https://h/p?x=a@b, s3://bucket/key", None),  # nothing to hide
])
def test_one_function_hides_the_userinfo_of_any_uri(text, shown):
    from longtail.credentials import redact

    assert redact(text) == (text if shown is None else shown)
    assert SECRET not in redact(text)


def test_userinfo_splits_off_the_uri_with_escapes_decoded():
    from longtail.credentials import split_userinfo

    assert split_userinfo("http://bob:p%40ss@host:5000/x") == ("http://host:5000/x", "bob", "p@ss")
    assert split_userinfo("https://token@host") == ("https://host", "token", None)
    assert split_userinfo("sqlite:////tmp/mlflow.db") == ("sqlite:////tmp/mlflow.db", None, None)


def test_the_tracking_uri_is_stripped_at_the_edge_and_its_credentials_move_to_mlflows_variables():
    from longtail.tracking.env import tracking_credentials_to_env

    env = {"MLFLOW_TRACKING_URI": f"http://bob:{SECRET}@127.0.0.1:5000"}
    tracking_credentials_to_env(env)
    assert env == {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_TRACKING_USERNAME": "bob",
                   "MLFLOW_TRACKING_PASSWORD": SECRET}


def test_a_postgres_store_uri_moves_its_credentials_to_libpqs_variables():
    from longtail.tracking.env import tracking_credentials_to_env
    from longtail.tracking.store import resolve_tracking_uri

    env = {"MLFLOW_TRACKING_URI": f"postgresql://longtail:{SECRET}@db:5432/mlflow"}
    tracking_credentials_to_env(env)
    assert env == {"MLFLOW_TRACKING_URI": "postgresql://db:5432/mlflow", "PGUSER": "longtail", "PGPASSWORD": SECRET}
    # The driver longtail installs (psycopg 3); SQLAlchemy would read a bare postgresql:// as psycopg2.
    assert resolve_tracking_uri(env["MLFLOW_TRACKING_URI"]) == "postgresql+psycopg://db:5432/mlflow"
    assert resolve_tracking_uri("postgresql+psycopg2://db/m") == "postgresql+psycopg2://db/m"


def test_an_unreachable_postgres_store_is_one_line_without_its_password():
    import socket

    from longtail.tracking.store import check_tracking_reachable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LongtailError) as err:
        check_tracking_reachable(f"postgresql+psycopg://longtail:{SECRET}@127.0.0.1:{port}/mlflow")
    message = str(err.value)
    assert message.startswith(f"MLflow tracking store postgresql+psycopg://longtail:***@127.0.0.1:{port}/mlflow "
                              "is unreachable (")
    assert SECRET not in message and "\n" not in message


def test_mlflow_run_json_never_holds_a_credential(tmp_path):
    RunInfo(f"http://bob:{SECRET}@127.0.0.1:5000", "exp", "abc").save(tmp_path)
    text = (tmp_path / "mlflow_run.json").read_text()
    assert SECRET not in text and "bob" not in text
    assert RunInfo.load(tmp_path).tracking_uri == "http://127.0.0.1:5000"


def test_the_ui_hint_shows_the_page_without_credentials():
    assert ui_hint(f"http://bob:{SECRET}@127.0.0.1:5000", "3") == "http://127.0.0.1:5000/#/experiments/3/runs"


def test_every_log_record_is_redacted_even_through_a_librarys_own_handler():
    from longtail.credentials import redact_log_records

    before = logging.getLogRecordFactory()
    stream = io.StringIO()
    logger = logging.getLogger("mlflow.some_module_of_theirs")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        redact_log_records()
        logger.warning("request to %s failed", f"http://bob:{SECRET}@host/api")
        try:
            raise RuntimeError(f"API request to http://bob:{SECRET}@host/api failed")
        except RuntimeError:
            logger.exception("it broke")
    finally:
        logging.setLogRecordFactory(before)
        logger.removeHandler(handler)
        logger.propagate = True
    logged = stream.getvalue()
    assert "request to http://bob:***@host/api failed" in logged and "RuntimeError" in logged
    assert SECRET not in logged


def test_report_against_a_failing_server_prints_no_credential(monkeypatch, capsys, tmp_path):
    server = FakeServer((200, b"OK"))  # healthy, then HTTP 500 on every API call
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bob:{SECRET}@127.0.0.1:{server.port}")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", *CLIENT_LIMITS):
        monkeypatch.setenv(name, "")  # the CLI sets them: restored (unset) after the test
        monkeypatch.delenv(name)
    try:
        code = main(["report", "some-experiment", "--out", str(tmp_path / "report.md")])
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith(f"longtail report: error: MLflow tracking store http://127.0.0.1:{server.port}")
    assert err.count("\n") == 1
    assert SECRET not in out + err


def test_a_bugs_traceback_is_printed_without_credentials(monkeypatch, capsys):
    import longtail.commands.score as score

    def broken(args):
        raise RuntimeError(f"could not reach http://bob:{SECRET}@host/api")

    monkeypatch.setattr(score, "run", broken)
    assert main(["score", "a.csv", "b.csv"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "RuntimeError: could not reach http://bob:***@host/api" in err and SECRET not in err
