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
. scripts/serve-lib.sh
start_remit
trap stop_remit EXIT
run() {
  local before after
  before=$(server_cpu)
  "$bin/remit-loadgen" "$@"
  after=$(server_cpu)
  echo "    server CPU: $(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.2f s", a-b}')"
}
run --scenario evaluate --concurrency 64 --requests "$reqs"
run --scenario evaluations --concurrency 8 --requests "$batches" --batch 100
echo -n "audit chain after the run: "
"$bin/remit" audit verify --data-dir "$data" | tail -1
