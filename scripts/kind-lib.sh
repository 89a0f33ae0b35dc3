# shellcheck shell=bash
# Shared by scripts/kind-{up,e2e,down}.sh: pinned versions, prerequisite checks, helpers.
# Sourced, not executed. Written for a machine with Docker; none of this runs on the dev/CI machines.

# kind release whose node images manifests/kind/cluster.yaml pins (kind v0.33.0 release notes,
# https://github.com/kubernetes-sigs/kind/releases/tag/v0.33.0). Other kind versions may work but
# node images are only guaranteed for the release that built them (kind quick start,
# https://kind.sigs.k8s.io/docs/user/quick-start/#creating-a-cluster).
KIND_VERSION_PINNED="v0.33.0"
# Kubeflow Pipelines backend matching the kfp SDK range in pyproject.toml (kfp>=2.17,<2.18).
# Standalone install as in https://www.kubeflow.org/docs/components/pipelines/operator-guides/installation/
KFP_VERSION="${KFP_VERSION:-2.17.1}"
# Katib, standalone, at its latest release (v0.19.0, 2025-10-30; its CHANGELOG). longtail.katib needs
# v0.18 or later (feasibleSpace.distribution, for logUniform parameters).
# Standalone install as in https://www.kubeflow.org/docs/components/katib/installation/
KATIB_VERSION="${KATIB_VERSION:-v0.19.0}"
KIND_CLUSTER="${KIND_CLUSTER:-longtail}"
KUBE_CONTEXT="kind-${KIND_CLUSTER}"
STATE_DIR="${STATE_DIR:-.longtail/kind}"
# Local ports of the port-forwards kind-up.sh starts and kind-e2e.sh uses.
KFP_PORT="${KFP_PORT:-8080}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MINIO_PORT="${MINIO_PORT:-9000}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

need() {  # need COMMAND "how to get it"
  command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH; $2"
}

check_prerequisites() {
  need docker "install Docker (https://docs.docker.com/engine/install/)"
  docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed); start Docker"
  need kind "install kind ${KIND_VERSION_PINNED} (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
  need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
  need git "kubectl apply -k with a github.com URL clones the KFP manifests with git"
  [ -x .venv/bin/python ] || die ".venv missing; run \`make install\` first"
  local kind_version
  kind_version="$(kind version | awk '{print $2}')"
  log "docker $(docker version --format '{{.Server.Version}}'), kind ${kind_version}, kubectl $(kubectl version --client -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"
  if [ "${kind_version}" != "${KIND_VERSION_PINNED}" ]; then
    log "warning: kind ${kind_version} is not the pinned ${KIND_VERSION_PINNED}; the node image in manifests/kind/cluster.yaml was built for ${KIND_VERSION_PINNED}"
  fi
}

kc() { kubectl --context "${KUBE_CONTEXT}" "$@"; }

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER}"; }
