#!/usr/bin/env bash
# Tear down what scripts/kind-up.sh started: its port-forwards (by their pid files only) and the
# kind cluster. Keeps manifests/base/*.env unless PURGE_CREDENTIALS=1. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/kind-lib.sh
source scripts/kind-lib.sh
need kind "install kind ${KIND_VERSION_PINNED} (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"

for pidfile in "${STATE_DIR}"/port-forward-*.pid; do
  [ -e "${pidfile}" ] || continue
  pid="$(cat "${pidfile}")"
  if kill -0 "${pid}" 2>/dev/null; then kill "${pid}" && log "stopped port-forward ${pid}"; fi
  rm -f "${pidfile}"
done

if cluster_exists; then
  kind delete cluster --name "${KIND_CLUSTER}"
else
  log "no kind cluster ${KIND_CLUSTER}; nothing to delete"
fi

if [ "${PURGE_CREDENTIALS:-0}" = "1" ]; then
  rm -f manifests/base/minio.env manifests/base/s3.env manifests/base/mlflow.env manifests/base/mlflow-server.env \
    && log "removed generated credentials"
fi
