"""The kind end-to-end check of the search on Katib: tiny digits-lt splits in MinIO → a 2-trial Experiment
(longtail.katib) → both trials succeed with their val_macro_f1 collected by Katib → their runs in MLflow.

Called by scripts/kind-e2e.sh after scripts/kind-up.sh (which installs Katib), with the port-forwards up
and the S3 keys and the MLflow user in the environment. Exits non-zero, naming the failed step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from longtail.katib import NAMESPACE, TRIAL_CONTAINER, katib_documents, katib_yaml
from longtail.sweep_plan import SearchPlan, load_search
from longtail.trial_metrics import OBJECTIVE

REPO = Path(__file__).resolve().parents[1]
# The tiny pipeline's settings (tests/integration/conftest.py TINY_PIPELINE), one search entry of each kind.
SEARCH = """name: {name}
base: {base}
set:
  experiment: {name}
  model.name: small_cnn
  model.args: {{width: 8}}
  train.batch_size: 32
  data.image_size: 16
  train.lr.schedule: constant
  train.optimizer.name: adam
  train.optimizer.ema: 0.0
  train.jit_compile: false
  evaluate.min_macro_f1: 0.0
search:
  train.lr.initial: {{loguniform: [0.001, 0.01]}}
  train.augmentation.erase: {{uniform: [0.0, 0.5]}}
  train.epochs: {{int: [1, 2]}}
  train.loss: {{choice: [{{name: logit_adjusted, args: {{tau: 1.0}}}}, {{name: cross_entropy, args: {{}}}}]}}
"""
# kind's one node: the search's own trials ask for the pipeline's train step's resources.
KIND_REQUESTS = {"cpu": "500m", "memory": "2Gi"}


def kubectl(context: str, *args: str) -> str:
    done = subprocess.run(["kubectl", "--context", context, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def condition(obj: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in obj.get("status", {}).get("conditions", []))


def e2e_documents(work: Path, name: str, splits: str) -> tuple[SearchPlan, list[dict]]:
    """The e2e's search file (written into `work`), read, and its ConfigMap and Experiment sized for kind."""
    search = work / f"{name}.yaml"
    search.write_text(SEARCH.format(name=name, base=REPO / "experiments" / "demo.yaml"))
    plan = load_search(search)
    docs = katib_documents(plan, parallelism=2, max_trials=2, data=splits, gpus=0)
    for container in docs[1]["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]:
        container["resources"] = {"requests": dict(KIND_REQUESTS), "limits": {"memory": KIND_REQUESTS["memory"]}}
    return plan, docs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--context", required=True, help="kubectl context of the kind cluster, e.g. kind-longtail")
    parser.add_argument("--mlflow", required=True, help="MLflow URL, e.g. http://localhost:5000")
    parser.add_argument("--s3", required=True, help="MinIO S3 URL, e.g. http://localhost:9000")
    parser.add_argument("--work", required=True, type=Path, help="scratch folder")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds to wait for the Experiment")
    args = parser.parse_args()
    name = f"katib-e2e-{time.strftime('%Y%m%d-%H%M%S')}"
    longtail = Path(sys.executable).with_name("longtail")  # the CLI installed beside this Python

    print("1/6 tiny dataset: digits-lt", flush=True)
    data = args.work / "katib-digits-lt"
    subprocess.run([str(longtail), "data", "digits-lt", str(data)], check=True)

    splits = f"s3://longtail-data/e2e/{name}/splits"
    print(f"2/6 ingest at 16 px into {splits}", flush=True)
    subprocess.run([str(longtail), "ingest", str(data / "train"), splits, "--image-size", "16"], check=True,
                   env={**os.environ, "S3_ENDPOINT_URL": args.s3})

    print("3/6 the search as a Katib Experiment (longtail.katib): 2 trials, 2 at once", flush=True)
    plan, docs = e2e_documents(args.work, name, splits)
    manifest = args.work / f"{name}-katib.yaml"
    manifest.write_text(katib_yaml(docs))
    print(kubectl(args.context, "apply", "-f", str(manifest)), end="", flush=True)

    print(f"4/6 wait for Experiment {NAMESPACE}/{name}", flush=True)
    deadline = time.monotonic() + args.timeout
    while True:
        experiment = json.loads(kubectl(args.context, "-n", NAMESPACE, "get", "experiment", name, "-o", "json"))
        if condition(experiment, "Succeeded"):
            break
        if condition(experiment, "Failed") or time.monotonic() > deadline:
            print(f"FAILED: Experiment {name} did not succeed: {experiment.get('status', {})}", file=sys.stderr)
            return 1
        time.sleep(15)

    print("5/6 both trials succeeded and Katib collected their val_macro_f1", flush=True)
    trials = json.loads(kubectl(args.context, "-n", NAMESPACE, "get", "trials", "-l",
                                f"katib.kubeflow.org/experiment={name}", "-o", "json"))["items"]
    succeeded = [t for t in trials if condition(t, "Succeeded")]
    if len(succeeded) != 2:
        print(f"FAILED: {len(succeeded)} of {len(trials)} trial(s) succeeded, 2 expected", file=sys.stderr)
        return 1
    for trial in succeeded:
        metrics = {m["name"]: m for m in trial["status"].get("observation", {}).get("metrics", [])}
        latest = metrics.get(OBJECTIVE, {}).get("latest", "unavailable")
        try:
            value = float(latest)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            print(f"FAILED: trial {trial['metadata']['name']} has {OBJECTIVE} {latest!r}: the collector read no "
                  f"metric line (logs of its {TRIAL_CONTAINER} and metrics-logger-and-collector containers)",
                  file=sys.stderr)
            return 1
        print(f"    {trial['metadata']['name']}: {OBJECTIVE} {value:.4f}", flush=True)
    best = experiment["status"].get("currentOptimalTrial", {})
    assigned = sorted(a["name"] for a in best.get("parameterAssignments", []))
    if assigned != sorted(plan.space.keys()):
        print(f"FAILED: the best trial's assignments {assigned} are not the searched fields", file=sys.stderr)
        return 1

    print(f"6/6 MLflow holds a finished run per trial (experiment {name})", flush=True)
    from mlflow.tracking import MlflowClient  # MLflow is slow to import: only once the search has run

    tracking = MlflowClient(tracking_uri=args.mlflow)
    mlflow_experiment = tracking.get_experiment_by_name(name)
    runs = tracking.search_runs([mlflow_experiment.experiment_id]) if mlflow_experiment else []
    finished = {r.info.run_name for r in runs if r.info.status == "FINISHED"}
    missing = {t["metadata"]["name"] for t in succeeded} - finished
    if missing:
        print(f"FAILED: no finished MLflow run for trial(s) {sorted(missing)}", file=sys.stderr)
        return 1
    print(f"OK: Katib Experiment {name} succeeded; best trial {best.get('bestTrialName')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
