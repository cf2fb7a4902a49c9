#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests.
#
#   eval "$(bash .ci/postgres.sh)"        # start (or reuse) it; exports TICKGRAPH_TEST_PG_URL
#   bash .ci/postgres.sh stop             # stop it and delete its data directory
#
# Installs Debian's `postgresql` package if no server binaries are found (apt-get; needs
# root), then runs initdb + pg_ctl from /usr/lib/postgresql/<newest>/bin as a non-root
# user (`postgres` when run as root) on 127.0.0.1:PORT (default 55432, the next free
# port if that one is taken by something else) with its data in a temp directory
# (/tmp/tickgraph-pg-<port>), trust authentication on loopback only, fsync off (a test
# server: nothing in it needs to survive a crash). Creates the database tickgraph_test.
# Idempotent: a server this script started and that still answers is reused, so a
# second call takes well under a second. stdout carries only the `export` line; progress
# goes to stderr.
set -euo pipefail

ACTION="${1:-start}"
BASE_PORT="${TICKGRAPH_PG_PORT:-55432}"
DB_NAME="tickgraph_test"
log() { echo "postgres.sh: $*" >&2; }

find_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
    echo "$dir"
  fi
}

as_owner() {  # run a command as the cluster's (non-root) owner
  if [[ "$(id -u)" == 0 ]]; then
    (cd / && runuser -u postgres -- "$@")  # from /: the caller's cwd may be unreadable to postgres
  else
    "$@"
  fi
}

data_dir() { echo "${TMPDIR:-/tmp}/tickgraph-pg-$1"; }

answers() {  # our server on port $1 is up and accepts connections
  local dir; dir="$(data_dir "$1")"
  [[ -f "$dir/PG_VERSION" ]] && as_owner "$BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1 \
    && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

BIN="$(find_bin)"

if [[ "$ACTION" == "stop" ]]; then
  [[ -n "$BIN" ]] || exit 0
  for port in $(seq "$BASE_PORT" $((BASE_PORT + 20))); do
    dir="$(data_dir "$port")"
    if [[ -f "$dir/PG_VERSION" ]]; then
      as_owner "$BIN/pg_ctl" -D "$dir" -m immediate stop >/dev/null 2>&1 || true
      rm -rf "$dir"
      log "stopped the server on port $port and removed $dir"
    fi
  done
  exit 0
fi
[[ "$ACTION" == "start" ]] || { log "unknown action '$ACTION' (start | stop)"; exit 2; }

if [[ -z "$BIN" ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    log "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
    exit 1
  fi
  log "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)"
  [[ -n "$BIN" ]] || { log "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb was found"; exit 1; }
fi
if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
  log "user 'postgres' is missing (the postgresql package creates it); cannot run the server as non-root"
  exit 1
fi

PORT=""
for port in $(seq "$BASE_PORT" $((BASE_PORT + 20))); do
  if answers "$port"; then
    PORT="$port"; log "reusing the server on 127.0.0.1:$PORT"; break
  fi
  if port_free "$port"; then
    dir="$(data_dir "$port")"
    rm -rf "$dir"
    mkdir -p "$dir"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$dir"
    chmod 700 "$dir"
    log "initdb $dir"
    as_owner "$BIN/initdb" -D "$dir" -U postgres -A trust -E UTF8 --no-instructions >/dev/null
    log "starting the server on 127.0.0.1:$port"
    as_owner "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >/dev/null
    PORT="$port"; break
  fi
done
[[ -n "$PORT" ]] || { log "no free port in $BASE_PORT..$((BASE_PORT + 20))"; exit 1; }

if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
  "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB_NAME"
fi
echo "export TICKGRAPH_TEST_PG_URL=postgresql://postgres@127.0.0.1:$PORT/$DB_NAME"
