#!/usr/bin/env bash
# Start-task and introspection throughput on SQLite, on PostgreSQL with one replica and with
# three replicas, and revocation propagation between replicas: all in one run, on this
# machine, with release binaries on loopback.
# Usage: scripts/load-pg.sh [CONCURRENCY] [REQUESTS] [PROPAGATION_ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
conc=${1:-64}
reqs=${2:-20000}
rounds=${3:-300}
cargo build --release -q -p remit -p remit-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
admin_url=$(scripts/ensure-postgres.sh)
db="remit_bench_$$"
psql "$admin_url" -qc "CREATE DATABASE $db"
pg_url="${admin_url%/*}/$db"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# start NAME STORE [KEK] -> starts a server, echoes its URL; its pid is appended to $work/pids
start() {
  local name=$1 store=$2 kek=${3:-} port
  port=$(free_port)
  mkdir -p "$work/$name"
  if [ -n "$kek" ]; then export REMIT_KEK=$kek; else unset REMIT_KEK; fi
  RUST_LOG=warn "$bin/remit" serve --data-dir "$work/$name" --listen "127.0.0.1:$port" --store "$store" \
    >"$work/$name/out" 2>"$work/$name/err" &
  echo $! >>"$work/pids"
  for _ in $(seq 200); do curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break; sleep 0.05; done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || { cat "$work/$name/err" >&2; exit 1; }
  echo "http://127.0.0.1:$port"
}
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{s+=($14+$15)/t} END{printf "%.2f", s}' $(for p in "$@"; do echo "/proc/$p/stat"; done); }
run() { # run LABEL URLS PIDS...
  local label=$1 urls=$2; shift 2
  for scenario in start-task introspect; do
    local before after
    before=$(cpu_of "$@")
    echo -n "$label: "
    REMIT_URL=$urls "$bin/remit-loadgen" --scenario "$scenario" --concurrency "$conc" --requests "$reqs"
    after=$(cpu_of "$@")
    awk -v a="$after" -v b="$before" -v n="$reqs" -v s="$scenario" \
      'BEGIN{printf "    remit CPU for %s: %.1f us per request (all replicas)\n", s, (a-b)*1e6/n}'
  done
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; servers, PostgreSQL and the load generator share this machine"
: >"$work/pids"
sq=$(start sqlite sqlite); sq_pid=$(tail -1 "$work/pids")
export REMIT_ADMIN_TOKEN=$(cat "$work/sqlite/admin-token")
run "sqlite, 1 process" "$sq" "$sq_pid"
kill "$sq_pid"; wait "$sq_pid" 2>/dev/null || true

a=$(start pg-a "$pg_url"); a_pid=$(tail -1 "$work/pids")
kek=$(cat "$work/pg-a/kek")
export REMIT_ADMIN_TOKEN=$(cat "$work/pg-a/admin-token")
run "postgres, 1 replica" "$a" "$a_pid"
b=$(start pg-b "$pg_url" "$kek"); b_pid=$(tail -1 "$work/pids")
c=$(start pg-c "$pg_url" "$kek"); c_pid=$(tail -1 "$work/pids")
run "postgres, 3 replicas" "$a,$b,$c" "$a_pid" "$b_pid" "$c_pid"
REMIT_URL="$a,$b,$c" "$bin/remit-loadgen" --scenario propagation --requests "$rounds"
echo -n "audit chain after the run: "
REMIT_URL=$a "$bin/remit" audit verify --data-dir "$work/pg-a" | tail -1
for p in $(cat "$work/pids"); do pids+=("$p"); done
