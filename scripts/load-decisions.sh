#!/usr/bin/env bash
# Decisions, in one run: the in-process reference (plain Cedar is_authorized vs Remit's
# engine, criterion) and then Remit over HTTP on SQLite: single /access/v1/evaluation with
# keep-alive, and batched /access/v1/evaluations of 100. Every decision is audited durably.
# Usage: scripts/load-decisions.sh [REQUESTS] [BATCH_REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
reqs=${1:-20000}
batches=${2:-500}
echo "# $(date -u +%FT%TZ) $(nproc) cores; server and load generator share this machine"
cargo bench -q -p remit-benches --bench policy -- --noplot 2>/dev/null | grep -E "^decision|^compile|time:" || true
cargo build --release -q -p remit -p remit-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
data=$(mktemp -d)
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn "$bin/remit" serve --data-dir "$data" --listen "127.0.0.1:$port" >"$data/serve.out" 2>"$data/serve.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do [ -s "$data/admin-token" ] && grep -q listening "$data/serve.out" && break; sleep 0.1; done
export REMIT_URL="http://127.0.0.1:$port" REMIT_ADMIN_TOKEN=$(cat "$data/admin-token")
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat"; }
run() {
  local before after
  before=$(cpu)
  "$bin/remit-loadgen" "$@"
  after=$(cpu)
  echo "    server CPU: $(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.2f s", a-b}')"
}
run --scenario evaluate --concurrency 64 --requests "$reqs"
run --scenario evaluations --concurrency 8 --requests "$batches" --batch 100
echo -n "audit chain after the run: "
"$bin/remit" audit verify --data-dir "$data" | tail -1
