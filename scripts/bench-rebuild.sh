#!/usr/bin/env bash
# Containment counters rebuilt when the governance tail changes hands: one release `remit serve`
# (SQLite) takes DECISIONS task decisions over TASKS live tasks (remit-loadgen decide-task), is
# restarted on the same data directory, and its tail rebuilds the counters from the audit log
# (the last hour before its cursor, at most 50,000 records) before it reads on. Prints the
# rebuild's own log line (observations fed, elapsed) and the time from the restart until
# `/v1/status` shows the tail caught up.
# Usage: scripts/bench-rebuild.sh [DECISIONS] [TASKS]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(date -u +%FT%TZ) $(nproc) cores; server and load generator share this machine"
. scripts/serve-lib.sh
trap stop_remit EXIT
start_remit sqlite
"$bin/remit-loadgen" --scenario decide-task --tasks "${2:-100}" --concurrency 32 --requests "${1:-50000}"
port=${REMIT_URL##*:}
kill "$pid"
wait "$pid" 2>/dev/null || true
t0=$(date +%s%N)
RUST_LOG=info "$bin/remit" serve --data-dir "$data" --listen "127.0.0.1:$port" --store sqlite \
  >"$data/serve2.out" 2>"$data/serve2.err" &
pid=$!
caught_up=""
for _ in $(seq 1200); do
  caught_up=$(curl -fsS -H "Authorization: Bearer $REMIT_ADMIN_TOKEN" "$REMIT_URL/v1/status" 2>/dev/null |
    python3 -c 'import json,sys; j=[x for x in json.load(sys.stdin)["jobs"] if x["name"]=="governance.tail"]; print("yes" if j and j[0]["held_here"] and j[0]["behind"]==0 else "")' 2>/dev/null || true)
  [ "$caught_up" = yes ] && break
  sleep 0.05
done
t1=$(date +%s%N)
grep "containment counters rebuilt" "$data/serve2.err" | sed 's/\x1b\[[0-9;]*m//g' | tail -1
echo "restart -> tail caught up: $(( (t1 - t0) / 1000000 )) ms (caught up: ${caught_up:-no})"
