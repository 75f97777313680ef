#!/usr/bin/env bash
# Stop the throwaway PostgreSQL that .ci/start_postgres.sh started in folder $1 (and only that one), then remove it.
set -euo pipefail
DIR="$1"
[ -d "$DIR/data" ] || exit 0
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "'$BIN/pg_ctl' -D '$DIR/data' -m fast stop" >&2
else "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2; fi
rm -rf "$DIR"
