#!/usr/bin/env bash
# Stop the throwaway PostgreSQL that .ci/start_postgres.sh started in folder $1 (and only that one: pg_ctl -D of
# its own data folder, never a process name), then remove the folder, also when the server never started.
set -euo pipefail
DIR="$1"
[ -d "$DIR" ] || exit 0
if [ -f "$DIR/data/postmaster.pid" ]; then
  BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "'$BIN/pg_ctl' -D '$DIR/data' -m fast stop" >&2 || true
  else "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true; fi
fi
rm -rf "$DIR"
