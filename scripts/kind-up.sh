#!/usr/bin/env bash
# Bring longtail up on kind: cluster, Kubeflow Pipelines and Katib (standalone, pinned), MinIO + PostgreSQL +
# MLflow + the KFP wiring (manifests/overlays/kind), the step images, port-forwards; then print the URLs.
# Needs Docker, kind, kubectl and git; written for a laptop or a GitHub runner (kind-e2e workflow).
# NOT run on the project's dev/CI machines: they have no Docker engine.
# Idempotent: an existing cluster, env file, image or port-forward is reused, not recreated.
#   KIND_CLUSTER=longtail KFP_VERSION=2.17.1 KATIB_VERSION=v0.19.0 SKIP_IMAGES=1 scripts/kind-up.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kind-lib.sh
source scripts/kind-lib.sh

check_prerequisites
mkdir -p "${STATE_DIR}"

# 1. Credentials: random, written once, never committed (.gitignore: manifests/**/*.env), never printed.
# MinIO limits: access key / root user 3-20 characters, secret / password 8-40; hex 20 and 40 fit.
write_env() {  # write_env FILE USER_KEY SECRET_KEY
  local file=$1
  if [ -s "${file}" ]; then log "keeping ${file}"; return; fi
  (
    umask 077
    printf '%s=%s\n' "$2" "$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(10))')" > "${file}"
    printf '%s=%s\n' "$3" "$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(20))')" >> "${file}"
  )
  log "wrote random credentials to ${file}"
}
write_env manifests/base/minio.env MINIO_ROOT_USER MINIO_ROOT_PASSWORD
write_env manifests/base/s3.env AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
write_env manifests/base/mlflow.env MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD
if [ ! -s manifests/base/mlflow-server.env ]; then
  (
    umask 077
    printf 'MLFLOW_FLASK_SERVER_SECRET_KEY=%s\n' "$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')" \
      > manifests/base/mlflow-server.env
  )
  log "wrote a random key to manifests/base/mlflow-server.env"
fi
# PostgreSQL's password, and MLflow's store URI holding it (written together, from the same password).
if [ ! -s manifests/base/postgres.env ]; then
  (
    umask 077
    printf 'POSTGRES_PASSWORD=%s\n' "$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(20))')" \
      > manifests/base/postgres.env
    rm -f manifests/base/mlflow-store.env
  )
  log "wrote a random password to manifests/base/postgres.env"
fi
if [ ! -s manifests/base/mlflow-store.env ]; then
  (
    umask 077
    pg_password=$(sed -n 's/^POSTGRES_PASSWORD=//p' manifests/base/postgres.env)
    printf 'MLFLOW_BACKEND_STORE_URI=postgresql+psycopg://mlflow:%s@postgres.longtail.svc:5432/mlflow\n' \
      "${pg_password}" > manifests/base/mlflow-store.env
  )
  log "wrote MLflow's store URI to manifests/base/mlflow-store.env"
fi

# 2. Cluster (kind quick start: `kind create cluster --config`).
if cluster_exists; then
  log "kind cluster ${KIND_CLUSTER} exists; reusing it"
else
  kind create cluster --name "${KIND_CLUSTER}" --config manifests/kind/cluster.yaml --wait 180s
fi
kc cluster-info >/dev/null

# 3. Kubeflow Pipelines, standalone, at the pinned version (KFP installation guide: cluster-scoped
#    resources, wait for the CRDs, then the platform-agnostic env).
log "installing Kubeflow Pipelines ${KFP_VERSION}"
kc apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=${KFP_VERSION}"
kc wait --for condition=established --timeout=120s crd --all
kc apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=${KFP_VERSION}"

# 3b. Katib, standalone, at the pinned release (Katib's installation guide: one kustomization, in namespace
#     kubeflow beside KFP), for the search's Experiment (longtail.katib). Before step 4: Katib's install
#     labels namespace kubeflow too, and longtail's labels there, the Katib one included, must be applied last.
log "installing Katib ${KATIB_VERSION}"
kc apply -k "github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=${KATIB_VERSION}"
kc wait --for condition=established --timeout=120s \
  crd/experiments.kubeflow.org crd/trials.kubeflow.org crd/suggestions.kubeflow.org
# Katib's metrics collector starts beside each trial and follows the trial's process; one that starts after
# the trial has ended finds no process and reports no metrics (pkg/metricscollector/v1beta1/common/pns.go,
# GetMainProcesses). A first pull of its image can outlast a short trial: load it into the node now.
collector_image="$(kc -n kubeflow get configmap katib-config -o jsonpath='{.data.katib-config\.yaml}' \
  | .venv/bin/python -c 'import sys, yaml
print(next(c["image"] for c in yaml.safe_load(sys.stdin)["runtime"]["metricsCollectors"] if c["kind"] == "StdOut"))')"
log "loading Katib's metrics collector ${collector_image} into the node"
docker pull "${collector_image}"
kind load docker-image --name "${KIND_CLUSTER}" "${collector_image}"

# 4. longtail's services and KFP wiring. A Job's pod template is immutable: drop the old one first.
kc -n longtail delete job minio-buckets --ignore-not-found
kc apply -k manifests/overlays/kind

# 5. Step images, tagged as the compiled pipeline references them (components/images.py).
if [ "${SKIP_IMAGES:-0}" = "1" ]; then
  log "SKIP_IMAGES=1: not building/loading step images"
else
  make images
  make kind-load KIND_CLUSTER="${KIND_CLUSTER}"
fi

# 6. Wait for everything.
log "waiting for Kubeflow Pipelines and Katib (first start pulls many images: up to 15 minutes)"
kc -n kubeflow wait --for=condition=Available deployment --all --timeout=900s
kc -n longtail rollout status statefulset/minio --timeout=300s
kc -n longtail wait --for=condition=Complete job/minio-buckets --timeout=300s
kc -n longtail rollout status statefulset/postgres --timeout=300s
kc -n longtail rollout status deployment/mlflow --timeout=600s

# 7. Port-forwards in the background, one pid file each, restarted only if dead.
forward() {  # forward NAME NAMESPACE TARGET LOCAL:REMOTE
  local pidfile="${STATE_DIR}/port-forward-$1.pid"
  if [ -s "${pidfile}" ] && kill -0 "$(cat "${pidfile}")" 2>/dev/null; then return; fi
  nohup kubectl --context "${KUBE_CONTEXT}" -n "$2" port-forward "$3" "$4" \
    >"${STATE_DIR}/port-forward-$1.log" 2>&1 &
  echo $! >"${pidfile}"
}
forward kfp kubeflow svc/ml-pipeline-ui "${KFP_PORT}:80"
forward mlflow longtail svc/mlflow "${MLFLOW_PORT}:5000"
forward minio longtail svc/minio "${MINIO_PORT}:9000"

for url in "http://localhost:${KFP_PORT}/apis/v2beta1/healthz" "http://localhost:${MLFLOW_PORT}/health" \
           "http://localhost:${MINIO_PORT}/minio/health/ready"; do
  ok=0
  for _ in $(seq 1 30); do
    if curl -fsS -o /dev/null "${url}"; then ok=1; break; fi
    sleep 2
  done
  [ "${ok}" = 1 ] || die "${url} did not answer; see ${STATE_DIR}/port-forward-*.log"
done

cat <<MSG

longtail is up on kind cluster ${KIND_CLUSTER} (context ${KUBE_CONTEXT}):
  Kubeflow Pipelines UI/API  http://localhost:${KFP_PORT}
  Katib UI                   kubectl --context ${KUBE_CONTEXT} -n kubeflow port-forward svc/katib-ui 8081:80, then http://localhost:8081/katib/
  MLflow                     http://localhost:${MLFLOW_PORT}   (user: manifests/base/mlflow.env; export both lines)
  MinIO S3 API               http://localhost:${MINIO_PORT}   (keys: manifests/base/s3.env)
Next: scripts/kind-e2e.sh   Tear down: scripts/kind-down.sh
MSG
