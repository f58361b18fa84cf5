#!/usr/bin/env bash
# The SPIFFE Workload API, in one run: X.509-SVID issuance beside its raw parts (a P-256 key
# generation plus one ECDSA signature; criterion, with the raw ES256 JWT reference), then the
# time from a revocation (disabling the agent over the HTTP API) to the py-spiffe stream's
# PermissionDenied, against the release server on SQLite.
# Usage: scripts/bench-workload.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
echo "# $(date -u +%FT%TZ) $(nproc) cores; server and clients share this machine"
cargo bench -q -p remit-benches --bench token -- --noplot "x509_svid|es256/raw_sign" 2>/dev/null \
  | grep -E "^x509|^es256|time:" || true
py=$(scripts/python-env.sh)
. scripts/serve-lib.sh
start_remit
trap stop_remit EXIT
"$py" tests/spiffe/revocation_latency.py --rounds "$rounds" --socket "unix://$data/workload.sock"
