#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the tests (tests/test_tune.py: a study shared by two
# workers) and print its URL on stdout; progress goes to stderr. Installs Debian's `postgresql` if missing.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PORT="${YOLO_OPT_PG_PORT:-55432}"
while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done  # first free port
DIR="${YOLO_OPT_PG_DIR:-$(mktemp -d /tmp/yolo-opt-pg.XXXXXX)}"  # .ci/stop_postgres.sh DIR stops this server
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }  # initdb refuses root
[ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
as_pg "'$BIN/initdb' -D '$DIR/data' -U postgres --auth-local=trust --auth-host=scram-sha-256" >&2
as_pg "'$BIN/pg_ctl' -D '$DIR/data' -l '$DIR/server.log' -w -o \"-c listen_addresses=127.0.0.1 -p $PORT -k '$DIR'\" start" >&2
as_pg "'$BIN/psql' -q -h '$DIR' -p $PORT -U postgres -c \"CREATE USER yolo_opt PASSWORD 'yolo_opt'\"" >&2
as_pg "'$BIN/createdb' -h '$DIR' -p $PORT -U postgres -O yolo_opt yolo_opt_test" >&2
echo "postgresql://yolo_opt:yolo_opt@127.0.0.1:$PORT/yolo_opt_test"
