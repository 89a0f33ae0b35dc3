"""Through kfp.local's own retry loop (the compiled retry policy): a retried step's user error is tried
once and fails the run at the next step; its transient failure is retried (docs/safety.md "Fail once")."""

# No `from __future__ import annotations` here: KFP reads the components' real types.

import builtins

import pytest
from kfp import dsl, local
from kfp.local.config import LocalExecutionConfig

pytestmark = pytest.mark.slow


@dsl.component(install_kfp_package=False)
def flaky(failure: str, attempts: str, out: dsl.Output[dsl.Artifact]) -> str:
    """Counts its attempts; fails with a user's error, or with a transient one on its first two."""
    from pathlib import Path

    from longtail.errors import DataError
    from longtail.handed_on_error import handed_on

    with open(attempts, "a") as f:
        f.write(".")
    with handed_on(out.path, retried=True):
        if failure == "user":
            raise DataError("only one class ('cat') of s3://bucket/one is kept")
        if failure == "transient" and len(Path(attempts).read_text()) < 3:
            raise ConnectionResetError("the artifact store went away")
        Path(out.path).mkdir(parents=True, exist_ok=True)
        return "done"
    return ""


@dsl.component(install_kfp_package=False)
def consume(data: dsl.Input[dsl.Artifact]):
    from longtail.handed_on_error import raise_handed_on

    raise_handed_on(data.path, "flaky")


@dsl.pipeline(name="fail-once")
def fail_once(failure: str, attempts: str):
    step = flaky(failure=failure, attempts=attempts).set_retry(num_retries=2, backoff_duration="0s")
    consume(data=step.outputs["out"])


@pytest.fixture
def kfp_local(tmp_path):
    saved_config, saved_print = LocalExecutionConfig.instance, builtins.print
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    yield
    LocalExecutionConfig.instance, builtins.print = saved_config, saved_print


def test_a_user_error_is_tried_once_and_fails_the_run(kfp_local, tmp_path, capfd):
    attempts = tmp_path / "attempts"
    with pytest.raises(RuntimeError, match="consume"):
        fail_once(failure="user", attempts=str(attempts))
    assert attempts.read_text() == "."
    assert "DataError: the flaky step stopped: only one class ('cat') of s3://bucket/one is kept" in capfd.readouterr().out


def test_a_transient_failure_is_retried(kfp_local, tmp_path):
    attempts = tmp_path / "attempts"
    fail_once(failure="transient", attempts=str(attempts))
    assert attempts.read_text() == "..."
