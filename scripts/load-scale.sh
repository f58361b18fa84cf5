#!/usr/bin/env bash
# Decision latency as the store grows: the same decisions measured with ~1,000 and then
# ~1,000,000 stored tasks (and as many audit records), in one run, on one server.
#   decide-task: POST /v1/decisions with live task tokens (task snapshot, tools_used,
#                tool-use record + audit record per allowed call)
#   evaluate:    POST /access/v1/evaluation (AuthZEN, attribute store; one audit record each)
# Each size is measured three times (the machine is shared and noisy).
# Usage: scripts/load-scale.sh [sqlite|postgres] [LARGE_TASKS] [DECISIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
large=${2:-1000000}
reqs=${3:-20000}
. scripts/serve-lib.sh
store=sqlite
count_tasks() { python3 -c 'import sqlite3,sys;print(sqlite3.connect("file:"+sys.argv[1]+"?mode=ro",uri=True).execute("select count(*) from tasks").fetchone()[0])' "$data/remit.db"; }
if [ "$backend" = postgres ]; then
  admin_url=$(scripts/ensure-postgres.sh)
  db="remit_scale_$$"
  psql "$admin_url" -qc "CREATE DATABASE $db"
  store="${admin_url%/*}/$db"
  count_tasks() { psql "$store" -tAc "SELECT count(*) FROM tasks"; }
fi
cleanup() {
  stop_remit
  if [ "$backend" = postgres ]; then psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; fi
}
trap cleanup EXIT
start_remit "$store"
echo "# $(date -u +%FT%TZ) $(nproc) cores; backend=$backend; server and load generator share this machine"
measure() {
  echo "## stored tasks: $(count_tasks)"
  "$bin/remit-loadgen" --scenario decide-task --concurrency 64 --tasks 1000 --requests "$reqs"
  "$bin/remit-loadgen" --scenario evaluate --concurrency 64 --requests "$reqs"
}
"$bin/remit-loadgen" --scenario start-task --concurrency 32 --requests 1000 >/dev/null
measure; measure; measure
echo "## seeding to $large tasks over HTTP"
"$bin/remit-loadgen" --scenario start-task --concurrency 64 --requests "$large" --max-seconds 1800
measure; measure; measure
