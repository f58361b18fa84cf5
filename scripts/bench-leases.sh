#!/usr/bin/env bash
# Revocation of a workflow holding many database logins, in one run: a private PostgreSQL
# cluster (initdb, trust auth, a free port) for the logins, one `remit serve` (SQLite, or the
# STORE given) with its proxy, LEASES real logins made through the proxy's credential
# endpoint, then the workflow killed: the kill's latency, the time until every login is gone,
# and task-start latency in another workflow at rest and during the revocation.
# Usage: scripts/bench-leases.sh [LEASES] [CONCURRENCY] [STORE]
set -euo pipefail
cd "$(dirname "$0")/.."
leases=${1:-100000}
conc=${2:-8}
store=${3:-sqlite}
echo "# $(date -u +%FT%TZ) $(nproc) cores; server, PostgreSQL and load generator share this machine"
. scripts/serve-lib.sh
pgbin=${REMIT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
pgdir=$(mktemp -d)
pgport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$pgdir"
as_pg "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres --no-sync >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
cleanup() {
  stop_remit
  as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap cleanup EXIT
psql -q "postgres://postgres@127.0.0.1:$pgport/postgres" -c "CREATE DATABASE app" -c "CREATE ROLE app_reader NOLOGIN"
proxy_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
export REMIT_PROXY_LISTEN="127.0.0.1:$proxy_port"
start_remit "$store"
"$bin/remit-loadgen" --scenario leases --leases "$leases" --concurrency "$conc" \
  --proxy-url "http://127.0.0.1:$proxy_port" --db-admin-url "postgres://postgres@127.0.0.1:$pgport/app"
left=$(psql -qtA "postgres://postgres@127.0.0.1:$pgport/postgres" -c "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'remit\_%'")
echo "roles left in the database: $left"
