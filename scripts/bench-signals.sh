#!/usr/bin/env bash
# Kill → Shared Signals SET latency, end to end: one release `remit serve` (SQLite, or the STORE
# given), an administrator's push stream to the PyJWT receiver (tests/ssf/receiver.py), KILLS
# tasks killed one at a time and one workflow of BATCH tasks suspended at once
# (scripts/bench_signals.py prints the figures).
# Usage: scripts/bench-signals.sh [KILLS] [BATCH] [STORE]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(date -u +%FT%TZ) $(nproc) cores; server, receiver and driver share this machine"
. scripts/serve-lib.sh
trap stop_remit EXIT
py=$(scripts/python-env.sh)
start_remit "${3:-sqlite}"
"$py" scripts/bench_signals.py "${1:-200}" "${2:-1000}"
