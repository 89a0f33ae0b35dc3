#!/usr/bin/env bash
# A PostgreSQL server of longtail's own on 127.0.0.1: Debian's `postgresql` package, run as an
# unprivileged cluster in STATE_DIR (initdb, pg_ctl, the port given), so nothing system-wide changes:
# the system's own cluster and service are never touched. Used by scripts/services.sh
# (BACKEND=postgres) and the integration tests' PostgreSQL fixture.
#
#   scripts/pg-server.sh up STATE_DIR [PORT]   create the cluster on first start, start it (or keep it)
#   scripts/pg-server.sh down STATE_DIR        stop it (fast shutdown; the data stays in STATE_DIR)
#   scripts/pg-server.sh kill STATE_DIR        stop it abruptly (immediate: no checkpoint; the next
#                                              start recovers as after a crash)
#
# The password is throwaway, generated on first start, and kept with the store's URI in
# STATE_DIR/pg.env (mode 600, never committed, never on a command line):
#   MLFLOW_BACKEND_STORE_URI=postgresql+psycopg://longtail:...@127.0.0.1:PORT/mlflow
# TCP on 127.0.0.1 only (no Unix socket), scram-sha-256 for every connection.
# As root (CI), the cluster runs as the `postgres` user the package made (initdb refuses root):
# STATE_DIR is handed to it, so it must sit where that user can reach it (not under /root).
set -euo pipefail
cd "$(dirname "$0")/.."

ACTION=${1:-}
STATE=${2:-}
PORT=${3:-5432}
[ -n "$STATE" ] || { echo "usage: $0 up|down|kill STATE_DIR [PORT]" >&2; exit 2; }
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "${PG_BIN}/pg_ctl" ] || {
  echo "pg-server: PostgreSQL not found under /usr/lib/postgresql/*/bin; apt-get install postgresql" >&2; exit 1; }
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
DATA=$STATE/data
DB=mlflow
USER_NAME=longtail

as_owner() {  # run a PostgreSQL program as the cluster's owner: ourselves, or `postgres` when root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { as_owner "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

up() {
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$STATE"
    runuser -u postgres -- test -w "$STATE" || {
      echo "pg-server: user postgres cannot write $STATE (a parent folder is private); put it elsewhere" >&2; exit 1; }
  fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    local password pwfile
    password=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
    pwfile=$STATE/.pwfile
    (umask 077; printf '%s\n' "$password" >"$pwfile"
     printf 'export MLFLOW_BACKEND_STORE_URI=postgresql+psycopg://%s:%s@127.0.0.1:%s/%s\n' \
       "$USER_NAME" "$password" "$PORT" "$DB" >"$STATE/pg.env")
    [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
    as_owner "$PG_BIN/initdb" -D "$DATA" -U "$USER_NAME" --pwfile="$pwfile" --auth=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 || {
      rm -f "$pwfile"; echo "pg-server: initdb failed; see $STATE/initdb.log" >&2; exit 1; }
    rm -f "$pwfile"
    printf "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n" >>"$DATA/postgresql.conf"
    fresh=1
  fi
  # The port the store's URI names (a later `up` with another port is refused, not silently moved).
  local uri_port
  uri_port=$(sed -n 's|.*@127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$STATE/pg.env")
  [ "$uri_port" = "$PORT" ] || {
    echo "pg-server: the cluster in $STATE listens on port $uri_port (pg.env), not $PORT" >&2; exit 1; }
  if ! running; then
    as_owner "$PG_BIN/pg_ctl" -D "$DATA" -l "$STATE/postgres.log" -o "-p $PORT" -w -t 60 start >/dev/null || {
      echo "pg-server: PostgreSQL did not start on 127.0.0.1:$PORT; see $STATE/postgres.log" >&2; exit 1; }
  fi
  if [ "${fresh:-0}" = 1 ]; then
    # One database for MLflow's store; the password reaches createdb through the environment only.
    PGPASSWORD=$(sed -n "s|.*://$USER_NAME:\([^@]*\)@.*|\1|p" "$STATE/pg.env") \
      "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" "$DB"
  fi
}

down() {
  if running; then as_owner "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null; fi
}

kill_now() {
  if running; then as_owner "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w -t 60 stop >/dev/null; fi
}

case "$ACTION" in
  up) up ;;
  down) down ;;
  kill) kill_now ;;
  *) echo "usage: $0 up|down|kill STATE_DIR [PORT]" >&2; exit 2 ;;
esac
