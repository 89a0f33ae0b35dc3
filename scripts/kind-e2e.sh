#!/usr/bin/env bash
# The end-to-end run on kind (after scripts/kind-up.sh): compile the pipeline with
# `python pipelines/compile.py`, put a tiny digits-lt dataset in MinIO, create a run with the kfp
# client, wait, then assert the run SUCCEEDED and MLflow holds its run (scripts/kind_e2e.py); then
# search on Katib: a 2-trial Experiment from longtail.katib on digits-lt splits in MinIO, asserted to
# succeed with both trials' val_macro_f1 collected and their runs in MLflow (scripts/kind_katib_e2e.py).
# Written for a machine with Docker; NOT run on the project's dev/CI machines (no Docker engine).
#   E2E_GPUS=0 E2E_TIMEOUT=3600 scripts/kind-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kind-lib.sh
source scripts/kind-lib.sh

need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
need curl "install curl"
[ -x .venv/bin/python ] || die ".venv missing; run \`make install\` first"
cluster_exists || die "no kind cluster ${KIND_CLUSTER}; run scripts/kind-up.sh first"
[ -s manifests/base/s3.env ] || die "manifests/base/s3.env missing; run scripts/kind-up.sh first"
[ -s manifests/base/mlflow.env ] || die "manifests/base/mlflow.env missing; run scripts/kind-up.sh first"
for url in "http://localhost:${KFP_PORT}/apis/v2beta1/healthz" "http://localhost:${MLFLOW_PORT}/health" \
           "http://localhost:${MINIO_PORT}/minio/health/ready"; do
  curl -fsS -o /dev/null "${url}" || die "${url} does not answer; re-run scripts/kind-up.sh (port-forwards)"
done

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# Run a command with the S3 keys and the MLflow user in its environment only (a subshell); never echoed.
with_secrets() {
  (
    set -a
    # shellcheck disable=SC1091
    source manifests/base/s3.env
    # shellcheck disable=SC1091
    source manifests/base/mlflow.env
    set +a
    "$@"
  )
}

with_secrets .venv/bin/python scripts/kind_e2e.py \
    --kfp "http://localhost:${KFP_PORT}" --mlflow "http://localhost:${MLFLOW_PORT}" \
    --s3 "http://localhost:${MINIO_PORT}" --work "${work}" \
    --gpus "${E2E_GPUS:-0}" --timeout "${E2E_TIMEOUT:-3600}" || {
  log "e2e failed; pods of the last run:"
  kc -n kubeflow get pods --sort-by=.metadata.creationTimestamp | tail -n 15 || true
  exit 1
}
with_secrets .venv/bin/python scripts/kind_katib_e2e.py \
    --context "${KUBE_CONTEXT}" --mlflow "http://localhost:${MLFLOW_PORT}" \
    --s3 "http://localhost:${MINIO_PORT}" --work "${work}" --timeout "${E2E_TIMEOUT:-3600}" || {
  log "Katib e2e failed; its Experiments, trials and their pods:"
  kc -n kubeflow get experiments,trials || true
  kc -n kubeflow get pods -l katib.kubeflow.org/trial --sort-by=.metadata.creationTimestamp | tail -n 10 || true
  exit 1
}
