#!/usr/bin/env bash
# Token exchange, in one run: the in-process references (raw ES256 signing and Remit's JWT
# mint and verify, DPoP proof verification beside a bearer verify; criterion) and then RFC 8693
# exchanges over HTTP on SQLite (each: verify the task token, read the task, decide the scope
# with Cedar, mint, and write the credential row with its audit record durably).
# Usage: scripts/load-exchange.sh [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
reqs=${1:-10000}
echo "# $(date -u +%FT%TZ) $(nproc) cores; server and load generator share this machine"
cargo bench -q -p remit-benches --bench token -- --noplot 2>/dev/null | grep -E "^es256|^dpop|time:" || true
. scripts/serve-lib.sh
start_remit
trap stop_remit EXIT
"$bin/remit-loadgen" --scenario exchange --concurrency 32 --requests "$reqs"
echo -n "audit chain after the run: "
"$bin/remit" audit verify --data-dir "$data" | tail -1
