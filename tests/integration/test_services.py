"""The cluster's services for real: raw images on an S3 endpoint, an MLflow server proxying artifacts to it.

The S3 endpoint is the `s3_server` fixture: SeaweedFS with enforced credentials (the MinIO stand-in; no
MinIO binary can be installed here) and MLflow is a real `mlflow server` process with a SQL store and --artifacts-destination s3://.
"""

import os
import subprocess
import sys
from pathlib import Path

import boto3
import mlflow
import pytest
from conftest import TINY_PIPELINE, MlflowServer, free_port

from longtail.pipelines.local import run_local

REPO = Path(__file__).resolve().parents[2]
TINY = TINY_PIPELINE + ["train.deterministic=true"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(digits_lt):
    return digits_lt


@pytest.fixture(scope="module")
def services(s3_server, digits, tmp_path_factory):
    """A bucket holding the raw digits-lt images and an MLflow server whose artifacts go to it."""
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = "services-test"
    s3.create_bucket(Bucket=bucket)
    for path in digits.rglob("*.png"):
        s3.upload_file(str(path), bucket, f"raw/digits/{path.relative_to(digits).as_posix()}")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), f"s3://{bucket}/mlflow", s3_server)
    url = server.start()
    yield {"s3": s3_server, "bucket": bucket, "mlflow": url, "client": s3}
    server.stop()


def test_s3_data_and_proxied_artifacts_give_the_local_result(services, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", services["s3"])
    bucket = services["bucket"]
    remote = run_local(REPO / "experiments" / "demo.yaml", f"s3://{bucket}/raw/digits/train",
                       f"s3://{bucket}/raw/digits/test", labels=digits / "test_labels.csv", overrides=TINY,
                       home=tmp_path / "remote", tracking_uri=services["mlflow"])
    local = run_local(REPO / "experiments" / "demo.yaml", str(digits / "train"), str(digits / "test"),
                      labels=digits / "test_labels.csv", overrides=TINY, home=tmp_path / "local")
    # Same images, same seed, deterministic ops: the same model quality from S3 as from local files.
    assert remote.macro_f1 == pytest.approx(local.macro_f1, abs=1e-6)
    assert remote.test_macro_f1 == pytest.approx(local.test_macro_f1, abs=1e-6)
    # The run's artifacts went through the server into the bucket, not to a local folder.
    run = mlflow.MlflowClient(tracking_uri=services["mlflow"]).get_run(remote.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    keys = [o["Key"] for page in services["client"].get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="mlflow/") for o in page.get("Contents", [])]
    names = {Path(k).name for k in keys}
    assert {"curves.png", "confusion_matrix.png", "submission.csv"} <= names, sorted(names)[:20]
    assert any(remote.run_id in k for k in keys)


def test_mlflow_server_down_fails_before_any_training(digits, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": dead}
    proc = subprocess.run([sys.executable, "-m", "longtail.cli", "run", str(REPO / "experiments" / "demo.yaml"),
                           "--data", str(digits / "train"), "--test", str(digits / "test"),
                           "--home", str(tmp_path / "home"), *sum((["--set", s] for s in TINY), [])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"MLflow tracking server {dead} is unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Found by the one bounded health probe, not after the MLflow client's retries (urllib3 logs each).
    assert "MLFLOW_TRACKING_URI, or unset it" in proc.stderr and "Retrying (" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "home" / "pipeline-root").exists(), "no pipeline step may start"
