"""The kind end-to-end check: tiny digits-lt in MinIO → one pipeline run on KFP → a run in MLflow.

Called by scripts/kind-e2e.sh after scripts/kind-up.sh, with the port-forwards up and the S3 keys
in the environment. Exits non-zero, naming the failed step, if anything is off.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import boto3
import kfp
from mlflow.tracking import MlflowClient


def upload(folder: Path, bucket: str, prefix: str, endpoint: str) -> int:
    """Copy a folder to s3://bucket/prefix/ (same relative paths). Returns the file count."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
            count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kfp", required=True, help="KFP UI/API URL, e.g. http://localhost:8080")
    parser.add_argument("--mlflow", required=True, help="MLflow URL, e.g. http://localhost:5000")
    parser.add_argument("--s3", required=True, help="MinIO S3 URL, e.g. http://localhost:9000")
    parser.add_argument("--work", required=True, type=Path, help="scratch folder")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs for the train step (kind: 0)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds to wait for the run")
    args = parser.parse_args()
    tag = time.strftime("%Y%m%d-%H%M%S")
    experiment = f"longtail-e2e-{tag}"

    print("1/5 tiny dataset: digits-lt", flush=True)
    data = args.work / "digits-lt"
    longtail = Path(sys.executable).with_name("longtail")  # the CLI installed beside this Python
    subprocess.run([str(longtail), "data", "digits-lt", str(data)], check=True)

    print("2/5 upload to MinIO s3://longtail-data/", flush=True)
    prefix = f"e2e/{tag}"
    n = upload(data / "train", "longtail-data", f"{prefix}/train", args.s3)
    n += upload(data / "test", "longtail-data", f"{prefix}/test", args.s3)
    print(f"    {n} files", flush=True)

    print("3/5 compile (python pipelines/compile.py)", flush=True)
    out = args.work / "compiled"
    subprocess.run([sys.executable, "pipelines/compile.py", "--out", str(out)], check=True)

    print("4/5 run on Kubeflow Pipelines", flush=True)
    client = kfp.Client(host=args.kfp)
    run = client.create_run_from_pipeline_package(
        str(out / "training.yaml"),
        arguments={
            "data_uri": f"s3://longtail-data/{prefix}/train",
            "test_uri": f"s3://longtail-data/{prefix}/test",
            "experiment": experiment,
            "epochs": 1,
            "gpus": args.gpus,
            "min_macro_f1": 0.0,
        },
        run_name=f"e2e-{tag}",
        experiment_name="longtail-e2e",
    )
    print(f"    run {run.run_id}: {args.kfp}/#/runs/details/{run.run_id}", flush=True)
    detail = client.wait_for_run_completion(run.run_id, timeout=args.timeout)
    state = str(getattr(detail, "state", ""))
    if state.upper() != "SUCCEEDED":
        print(f"FAILED: KFP run {run.run_id} ended in state {state!r}", file=sys.stderr)
        return 1

    print(f"5/5 MLflow holds the run (experiment {experiment})", flush=True)
    tracking = MlflowClient(tracking_uri=args.mlflow)
    exp = tracking.get_experiment_by_name(experiment)
    if exp is None:
        print(f"FAILED: MLflow has no experiment {experiment!r}", file=sys.stderr)
        return 1
    runs = tracking.search_runs([exp.experiment_id])
    finished = [r for r in runs if r.info.status == "FINISHED" and r.data.metrics]
    if not finished:
        print(f"FAILED: experiment {experiment!r} has no finished run with metrics "
              f"({len(runs)} run(s): {[r.info.status for r in runs]})", file=sys.stderr)
        return 1
    print(f"OK: KFP run {run.run_id} succeeded; MLflow run {finished[0].info.run_id} "
          f"metrics {sorted(finished[0].data.metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
