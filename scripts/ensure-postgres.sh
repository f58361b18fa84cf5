#!/usr/bin/env bash
# Makes sure a PostgreSQL server is reachable for the test suite and prints the admin URL
# the tests should use (REMIT_TEST_PG_URL). Order of preference:
#   1. REMIT_TEST_PG_URL, if already set and reachable;
#   2. the machine's server on 127.0.0.1:5432 (started with pg_ctlcluster if it is down);
#   3. a private throw-away cluster (initdb + pg_ctl) under target/pg-test, on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "ensure-postgres: $*" >&2; }

reachable() { pg_isready -q -h "$1" -p "$2" 2>/dev/null; }

if [ -n "${REMIT_TEST_PG_URL:-}" ]; then
  echo "$REMIT_TEST_PG_URL"
  exit 0
fi

if command -v pg_isready >/dev/null && reachable 127.0.0.1 5432; then
  echo "postgres://postgres@127.0.0.1:5432/postgres"
  exit 0
fi

if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  for v in $(ls /etc/postgresql); do
    log "starting the machine's PostgreSQL $v cluster"
    pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 || true
  done
  for _ in $(seq 1 50); do
    if reachable 127.0.0.1 5432; then
      echo "postgres://postgres@127.0.0.1:5432/postgres"
      exit 0
    fi
    sleep 0.2
  done
fi

bindir="${REMIT_PG_BIN:-}"
if [ -z "$bindir" ]; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  log "no PostgreSQL reachable and no initdb found; install PostgreSQL or set REMIT_TEST_PG_URL"
  exit 1
fi
dir="$PWD/target/pg-test"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg=()
if [ "$(id -u)" = "0" ]; then as_pg=(runuser -u postgres --); fi
rm -rf "$dir" && mkdir -p "$dir"
[ "$(id -u)" = "0" ] && chown postgres "$dir"
log "starting a private PostgreSQL on 127.0.0.1:$port in $dir"
"${as_pg[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >&2
echo "postgres://postgres@127.0.0.1:$port/postgres"
