#!/usr/bin/env bash
# podman's Docker-compatible API for kfp.local.DockerRunner (`longtail run --runner container`).
#
#   scripts/podman-service.sh up     start `podman system service` on SOCKET unless something answers there
#   scripts/podman-service.sh down   stop the one this script started
#
# The service runs with this repo's containers.conf (runc; ulimits root may set), which is what the
# containers it starts get. Then: export DOCKER_HOST=unix://$SOCKET (the runner finds the default).
set -euo pipefail
cd "$(dirname "$0")/.."

SOCKET=${PODMAN_SOCKET:-/run/podman/podman.sock}
STATE=.longtail/services
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/containers.conf}
mkdir -p "$STATE" "$(dirname "$SOCKET")"

answers() { curl -fsS --unix-socket "$SOCKET" -o /dev/null http://d/_ping 2>/dev/null; }

up() {
  command -v podman >/dev/null || { echo "podman-service: podman is not installed; apt-get install podman runc" >&2; exit 1; }
  if answers; then echo "podman-service: a Docker API already answers on $SOCKET"; return; fi
  rm -f "$SOCKET"
  setsid podman system service --time=0 "unix://$SOCKET" >"$STATE/podman.log" 2>&1 &
  echo $! >"$STATE/podman.pid"
  for _ in $(seq 1 60); do
    if answers; then echo "podman-service: up; export DOCKER_HOST=unix://$SOCKET"; return; fi
    sleep 0.5
  done
  echo "podman-service: no answer on $SOCKET within 30 s; see $STATE/podman.log" >&2
  exit 1
}

down() {
  if [ -f "$STATE/podman.pid" ]; then
    kill -- "-$(cat "$STATE/podman.pid")" 2>/dev/null || true
    rm -f "$STATE/podman.pid"
    echo "podman-service: stopped"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
