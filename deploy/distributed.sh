#!/usr/bin/env bash
# The distributed deployment on one machine: PostgreSQL, Redis, the MLflow server, the Dagster
# webserver and daemon, and Celery workers, all on 127.0.0.1, all state under one directory.
#
#   deploy/distributed.sh up|down|status|env
#
# Settings (environment, defaults): MLOPS_DISTRIBUTED_DIR (data/distributed), MLOPS_PG_PORT
# (5433), MLOPS_REDIS_PORT (6380), MLOPS_MLFLOW_PORT (5050), MLOPS_DAGSTER_PORT (3001),
# MLOPS_WORKERS (2), MLOPS_BACKFILL_PARTITIONS_PER_RUN (92), MLOPS_PG_PASSWORD (generated).
# The first `up` writes them to $MLOPS_DISTRIBUTED_DIR/env.sh (mode 600: it holds the database
# password); later runs read them from there. `source` it to point the dagster and mlflow CLIs
# at the deployment.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${MLOPS_DISTRIBUTED_DIR:-$REPO/data/distributed}"
case "${1:-}" in up | env) mkdir -p "$DIR" ;; esac
if [ -d "$DIR" ]; then DIR="$(cd "$DIR" && pwd)"; fi
RUN="$DIR/run"
LOGS="$DIR/logs"
PGDATA="$DIR/postgres"
HOST=127.0.0.1
PYTHON="$REPO/.venv/bin/python"
# Started in the background, a process of a script ignores SIGINT, and Dagster maps SIGTERM onto
# its SIGINT handler: the shim restores the default handlers, leads a new session (so `stop`
# ends the process group, children included), records its pid and becomes the command.
SHIM='import os, signal, sys
for s in (signal.SIGINT, signal.SIGQUIT): signal.signal(s, signal.SIG_DFL)
os.setsid()
with open(sys.argv[1], "w") as f: f.write(str(os.getpid()))
os.execvp(sys.argv[2], sys.argv[2:])'

die() { echo "distributed: $*" >&2; exit 1; }

pg_bin() {  # Debian's postgresql package keeps the server binaries off PATH
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$found" ] && command -v pg_ctl >/dev/null; then found="$(dirname "$(command -v pg_ctl)")"; fi
  [ -n "$found" ] || die "PostgreSQL server binaries not found: apt-get install -y postgresql"
  echo "$found"
}

as_pg() {  # PostgreSQL refuses to run as root: as root, its commands run as the postgres user
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

write_env() {
  if [ ! -f "$DIR/env.sh" ]; then
    local password="${MLOPS_PG_PASSWORD:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
    local pg="postgresql+psycopg2://mlops:$password@$HOST:${MLOPS_PG_PORT:-5433}"
    local redis="redis://$HOST:${MLOPS_REDIS_PORT:-6380}"
    (umask 077 && cat >"$DIR/env.sh" <<EOF
# The distributed deployment's settings (written by deploy/distributed.sh; holds a password).
export MLOPS_PG_PASSWORD='$password'
export MLOPS_PG_PORT='${MLOPS_PG_PORT:-5433}'
export MLOPS_REDIS_PORT='${MLOPS_REDIS_PORT:-6380}'
export MLOPS_MLFLOW_PORT='${MLOPS_MLFLOW_PORT:-5050}'
export MLOPS_DAGSTER_PORT='${MLOPS_DAGSTER_PORT:-3001}'
export MLOPS_WORKERS='${MLOPS_WORKERS:-2}'
export MLOPS_DAGSTER_PG_URL='$pg/dagster'
export MLOPS_MLFLOW_PG_URL='$pg/mlflow'
export DAGSTER_HOME='$DIR/dagster_home'
export MLOPS_DAGSTER_ARTIFACTS='$DIR/dagster_home/storage'
export MLOPS_DAGSTER_LOGS='$DIR/dagster_home/logs'
export MLOPS_DATA_DIR='$DIR/data'
export MLOPS_WAREHOUSE_ROOT='$DIR/warehouse'
export MLFLOW_TRACKING_URI='http://$HOST:${MLOPS_MLFLOW_PORT:-5050}'
export MLOPS_MLFLOW_ARTIFACT_LOCATION='mlflow-artifacts:/mlops_assets'
export MLOPS_CELERY_BROKER='$redis/0'
export MLOPS_CELERY_BACKEND='$redis/1'
export MLOPS_BACKFILL_PARTITIONS_PER_RUN='${MLOPS_BACKFILL_PARTITIONS_PER_RUN:-92}'
export DAGSTER_EVENT_BATCH_SIZE='${DAGSTER_EVENT_BATCH_SIZE:-1000}'
export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true
EOF
    )
  fi
  # shellcheck disable=SC1091
  source "$DIR/env.sh"
}

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start() {  # start NAME COMMAND...: in the background, its pid (= its process group) in run/NAME.pid
  local name="$1"; shift
  running "$name" && return
  rm -f "$RUN/$name.pid"
  (cd "$REPO" && exec "$PYTHON" -c "$SHIM" "$RUN/$name.pid" "$@" >"$LOGS/$name.log" 2>&1 </dev/null) &
  for _ in $(seq 100); do [ -s "$RUN/$name.pid" ] && return; sleep 0.1; done
  die "$name did not start: $(tail -n 5 "$LOGS/$name.log")"
}

http_ok() {  # no curl on a bare machine: the environment's Python asks
  "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$1"
}

wait_for() {  # wait_for NAME SECONDS COMMAND...: until COMMAND succeeds, while NAME runs
  local name="$1" seconds="$2"; shift 2
  for _ in $(seq "$((seconds * 2))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ -f "$RUN/$name.pid" ] && ! running "$name"; then
      die "$name exited: $(tail -n 5 "$LOGS/$name.log")"
    fi
    sleep 0.5
  done
  die "$name did not come up in ${seconds}s (logs in $LOGS)"
}

postgres_up() {
  local bin; bin="$(pg_bin)"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    local pwfile="$DIR/.pgpass.tmp"
    (umask 077 && printf '%s\n' "$MLOPS_PG_PASSWORD" >"$pwfile")
    if [ "$(id -u)" = 0 ]; then chown postgres "$PGDATA" "$pwfile"; fi
    as_pg "$bin/initdb" -D "$PGDATA" -U mlops --pwfile="$pwfile" --auth-host=scram-sha-256 \
      --auth-local=scram-sha-256 >"$LOGS/initdb.log" 2>&1 \
      || { rm -f "$pwfile"; die "initdb failed: $(tail -n 5 "$LOGS/initdb.log")"; }
    rm -f "$pwfile"
  fi
  if [ "$(id -u)" = 0 ]; then chown postgres "$RUN" "$LOGS"; fi
  if ! as_pg "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    # Listens on 127.0.0.1 only; its socket in run/, not in the system's directory.
    as_pg "$bin/pg_ctl" -D "$PGDATA" -w -t 60 -l "$LOGS/postgres.log" \
      -o "-c listen_addresses=$HOST -p $MLOPS_PG_PORT -k $RUN" start >/dev/null \
      || die "PostgreSQL did not start: $(tail -n 5 "$LOGS/postgres.log")"
  fi
  local db
  for db in dagster mlflow; do
    if ! PGPASSWORD="$MLOPS_PG_PASSWORD" "$bin/psql" -h "$HOST" -p "$MLOPS_PG_PORT" -U mlops \
      -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
      PGPASSWORD="$MLOPS_PG_PASSWORD" "$bin/psql" -h "$HOST" -p "$MLOPS_PG_PORT" -U mlops \
        -d postgres -qc "CREATE DATABASE $db" >/dev/null
    fi
  done
}

up() {
  command -v redis-server >/dev/null || die "redis-server not found: apt-get install -y redis-server"
  pg_bin >/dev/null
  [ -x "$REPO/.venv/bin/dagster" ] || die "no environment: run 'make setup' (uv sync --frozen) first"
  mkdir -p "$RUN" "$LOGS" "$DIR/redis" "$DIR/mlflow-artifacts" "$DIR/warehouse" "$DIR/data"
  write_env
  mkdir -p "$DAGSTER_HOME"
  cp "$REPO/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
  export PATH="$REPO/.venv/bin:$PATH"

  postgres_up
  if ! redis-cli -h "$HOST" -p "$MLOPS_REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --bind "$HOST" --port "$MLOPS_REDIS_PORT" --dir "$DIR/redis" --save '' \
      --appendonly no --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$LOGS/redis.log"
  fi
  wait_for redis 20 redis-cli -h "$HOST" -p "$MLOPS_REDIS_PORT" ping
  # The instance's tables, created once before several processes connect to it.
  (cd "$REPO" && "$PYTHON" -m mlops_assets.instance) >"$LOGS/instance.log" 2>&1 \
    || die "the Dagster instance could not be prepared: $(tail -n 5 "$LOGS/instance.log")"

  # The store's URL (with its password) through the environment, not the command line that `ps`
  # shows; MLflow's job runner (huey consumers for server-side jobs) is not used here.
  MLFLOW_BACKEND_STORE_URI="$MLOPS_MLFLOW_PG_URL" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    start mlflow mlflow server --artifacts-destination "$DIR/mlflow-artifacts" \
    --host "$HOST" --port "$MLOPS_MLFLOW_PORT" --workers 1
  start dagster-daemon dagster-daemon run -w "$REPO/deploy/workspace.yaml"
  start dagster-webserver dagster-webserver -h "$HOST" -p "$MLOPS_DAGSTER_PORT" \
    -w "$REPO/deploy/workspace.yaml"
  local i
  for i in $(seq "$MLOPS_WORKERS"); do
    start "worker$i" dagster-celery worker start -A dagster_celery.app \
      -y "$REPO/deploy/celery.yaml" --name "worker$i" -- --concurrency=1
  done
  wait_for mlflow 180 http_ok "http://$HOST:$MLOPS_MLFLOW_PORT/health"
  wait_for dagster-webserver 240 http_ok "http://$HOST:$MLOPS_DAGSTER_PORT/server_info"
  for i in $(seq "$MLOPS_WORKERS"); do
    wait_for "worker$i" 240 celery -b "$MLOPS_CELERY_BROKER" inspect ping --timeout 2 \
      -d "worker$i@$(hostname)"
  done
  echo "up: Dagster http://$HOST:$MLOPS_DAGSTER_PORT, MLflow http://$HOST:$MLOPS_MLFLOW_PORT," \
    "$MLOPS_WORKERS workers; state in $DIR; 'source $DIR/env.sh' for the CLI"
}

stop() {  # stop NAME...: TERM their process groups, KILL what is left after 20 s
  local name pid pids=()
  for name in "$@"; do
    [ -s "$RUN/$name.pid" ] || continue
    pid="$(cat "$RUN/$name.pid")"
    kill -TERM -- "-$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$RUN/$name.pid"
  done
  for _ in $(seq 40); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

down() {
  [ -d "$RUN" ] || { echo "down: nothing runs from $DIR"; return; }
  local names=() pidfile
  for pidfile in "$RUN"/worker*.pid; do [ -f "$pidfile" ] && names+=("$(basename "$pidfile" .pid)"); done
  stop "${names[@]}" dagster-webserver dagster-daemon mlflow
  if [ -s "$RUN/redis.pid" ]; then
    local pid; pid="$(cat "$RUN/redis.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f "$RUN/redis.pid"
  fi
  if [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" -w -m fast stop >/dev/null || true
  fi
  echo "down: stopped (state kept in $DIR; delete it to start afresh)"
}

status() {
  local pidfile name
  for pidfile in "$RUN"/*.pid; do
    [ -f "$pidfile" ] || continue
    name="$(basename "$pidfile" .pid)"
    if running "$name"; then echo "$name: running"; else echo "$name: stopped"; fi
  done
  if as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then echo "postgres: running"; fi
}

# One compound command, read whole before it runs, that exits: editing this file while it runs
# cannot make bash read on into changed text.
{
  case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    env) write_env; cat "$DIR/env.sh" ;;
    *) die "usage: $0 up|down|status|env" ;;
  esac
  exit
}
