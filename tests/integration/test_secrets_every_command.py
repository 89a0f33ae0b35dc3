"""Safety rule "Secrets", end to end: every command that talks to MLflow, against a real `mlflow server`
reached as http://user:SECRET@host, leaves the secret in no printed line, no file it writes, no kfp log
and nowhere in the MLflow store.

The plain server ignores basic auth (the MLflow client still sends it), which is all this test needs:
the question is where the password goes, not whether the server checks it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_PIPELINE, MlflowServer

REPO = Path(__file__).resolve().parents[2]
SECRET = "Pa55-W0rd-8b1d"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(root, (root / "artifacts").as_uri())
    server.start()
    yield server, root
    server.stop()


def files_holding(secret: str, *roots: Path) -> list[str]:
    """Every file under `roots` whose bytes contain `secret`."""
    return [str(p) for root in roots for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]


def test_no_command_prints_or_stores_the_tracking_password(server, digits_lt: Path, tmp_path: Path) -> None:
    mlflow_server, store = server
    uri = mlflow_server.url.replace("http://", f"http://longtail:{SECRET}@")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_TRACKING_URI"] = uri
    work = tmp_path / "work"
    work.mkdir()
    tiny = sum((["--set", s] for s in [*TINY_PIPELINE, "train.epochs=1"]), [])
    printed: dict[str, str] = {}

    def longtail(name: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "longtail.cli", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        printed[name] = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        return proc.stdout

    config = str(REPO / "experiments" / "demo.yaml")
    longtail("ingest", "ingest", str(digits_lt / "train"), "data", "--image-size", "16", "--workers", "1")
    longtail("ingest test", "ingest", str(digits_lt / "test"), "test", "--image-size", "16", "--unlabelled",
             "--workers", "1")
    longtail("train", "train", config, "--train", "data/train.h5", "--val", "data/val.h5", "--out", "model", *tiny)
    run_id = json.loads((work / "model" / "mlflow_run.json").read_text())["run_id"]
    longtail("predict", "predict", "model", "test/test.h5", "submission.csv")
    longtail("lb", "lb", run_id, "0.5")
    longtail("report", "report", "longtail-demo", "--out", "report.md")
    longtail("run", "run", config, "--data", str(digits_lt / "train"), "--test", str(digits_lt / "test"),
             "--home", "home-run", *tiny)
    longtail("sweep", "sweep", config, "--data", str(digits_lt / "train"), "--test", str(digits_lt / "test"),
             "--home", "home-sweep", "--parallelism", "1", *tiny)

    leaks = {
        "printed by": sorted(name for name, text in printed.items() if SECRET in text),
        "files under the output folders": files_holding(SECRET, work),  # model dirs, reports, kfp logs
        "the MLflow store": files_holding(SECRET, store),  # its database and artifacts
    }
    assert leaks == {k: [] for k in leaks}
    # The cases were exercised: the kfp logs were among the files read, and MLflow's own "View run at"
    # lines and the UI hint name the server.
    assert len(list(work.glob("home-*/pipeline-root/*.log"))) == 2
    assert f"View run demo at: {mlflow_server.url}/#/experiments/" in printed["train"]
    assert f"compare in the UI: {mlflow_server.url}/#/experiments/" in printed["sweep"]
