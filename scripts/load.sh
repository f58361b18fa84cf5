#!/usr/bin/env bash
# Start-task (and introspection) load over HTTP against a fresh Remit on SQLite.
# Builds release binaries, starts `remit serve` on a temp data dir on loopback, runs the
# load generator, stops the server. Usage: scripts/load.sh [CONCURRENCY] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
conc=${1:-64}
reqs=${2:-50000}
. scripts/serve-lib.sh
start_remit
trap stop_remit EXIT
echo "# $(date -u +%FT%TZ) $(nproc) cores; server and load generator share this machine"
for scenario in start-task introspect; do
  before=$(server_cpu)
  "$bin/remit-loadgen" --scenario "$scenario" --concurrency "$conc" --requests "$reqs"
  after=$(server_cpu)
  awk -v a="$after" -v b="$before" -v n="$reqs" -v s="$scenario" \
    'BEGIN{printf "  server CPU for %s: %.2f s = %.1f us per request (capacity %.0f/s per core)\n", s, a-b, (a-b)*1e6/n, n/(a-b)}'
done
