#!/usr/bin/env bash
# Start-task (and introspection) load over HTTP against a fresh Remit on SQLite.
# Builds release binaries, starts `remit serve` on a temp data dir on loopback, runs the
# load generator, stops the server. Usage: scripts/load.sh [CONCURRENCY] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
conc=${1:-64}
reqs=${2:-50000}
cargo build --release -q -p remit -p remit-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
data=$(mktemp -d)
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn "$bin/remit" serve --data-dir "$data" --listen "127.0.0.1:$port" >"$data/serve.out" 2>"$data/serve.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do [ -s "$data/admin-token" ] && grep -q listening "$data/serve.out" && break; sleep 0.1; done
export REMIT_URL="http://127.0.0.1:$port" REMIT_ADMIN_TOKEN=$(cat "$data/admin-token")
echo "# $(date -u +%FT%TZ) $(nproc) cores; server and load generator share this machine"
# CPU seconds the server process has used so far (user+system), from /proc.
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat"; }
for scenario in start-task introspect; do
  before=$(cpu)
  "$bin/remit-loadgen" --scenario "$scenario" --concurrency "$conc" --requests "$reqs"
  after=$(cpu)
  awk -v a="$after" -v b="$before" -v n="$reqs" -v s="$scenario" \
    'BEGIN{printf "  server CPU for %s: %.2f s = %.1f us per request (capacity %.0f/s per core)\n", s, a-b, (a-b)*1e6/n, n/(a-b)}'
done
