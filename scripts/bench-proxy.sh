#!/usr/bin/env bash
# The injecting tool proxy's overhead, in one run: the same GETs straight to a local upstream
# (served by the load generator, checking the key) and through `remit serve`'s proxy with only
# a task token (introspection, the decision, opening the secret, forwarding, the audit record).
# Usage: scripts/bench-proxy.sh [REQUESTS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
reqs=${1:-20000}
conc=${2:-16}
echo "# $(date -u +%FT%TZ) $(nproc) cores; server, upstream and load generator share this machine"
. scripts/serve-lib.sh
proxy_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
export REMIT_PROXY_LISTEN="127.0.0.1:$proxy_port"
start_remit
trap stop_remit EXIT
"$bin/remit-loadgen" --scenario proxy --proxy-url "http://127.0.0.1:$proxy_port" --concurrency "$conc" --requests "$reqs"
