#!/usr/bin/env bash
# Compares two builds of Remit under the same load, in one sitting: alternating runs of the
# load.sh scenarios (start-task, introspect) and the load-decisions.sh ones (evaluate,
# evaluations of 100), each on a fresh server and data directory, then the median rate per
# scenario per build. Use it to show a refactor did not regress.
#
#   scripts/compare-load.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [REQUESTS]
#
# Each BIN_DIR holds that build's `remit` and `remit-loadgen` (e.g. copied out of
# target/release after `cargo build --release -p remit -p remit-loadgen` at each commit).
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1
new=$2
rounds=${3:-5}
reqs=${4:-20000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(date -u +%FT%TZ) $(nproc) cores; server and load generator share this machine; $rounds alternating rounds"
one() { # BIN LABEL: one fresh server, every scenario
  local bin=$1 label=$2 data port pid line
  data=$(mktemp -d)
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  RUST_LOG=warn REMIT_ADMIN_LISTEN=off "$bin/remit" serve --data-dir "$data" --listen "127.0.0.1:$port" \
    >"$data/serve.out" 2>"$data/serve.err" &
  pid=$!
  for _ in $(seq 200); do curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && [ -s "$data/admin-token" ] && break; sleep 0.1; done
  export REMIT_URL="http://127.0.0.1:$port" REMIT_ADMIN_TOKEN
  REMIT_ADMIN_TOKEN=$(cat "$data/admin-token")
  for args in "--scenario start-task --concurrency 64 --requests $reqs" \
              "--scenario introspect --concurrency 64 --requests $reqs" \
              "--scenario evaluate --concurrency 64 --requests $reqs" \
              "--scenario evaluations --concurrency 8 --requests $((reqs / 100)) --batch 100"; do
    # shellcheck disable=SC2086
    line=$("$bin/remit-loadgen" $args | grep '^scenario=' | tail -1)
    echo "$label $line" | tee -a "$out"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
}
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then one "$old" old; one "$new" new; else one "$new" new; one "$old" old; fi
done
python3 - "$out" <<'EOF'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, rest = line.split(" ", 1)
    sc = re.search(r"scenario=(\S+)", rest).group(1)
    key = "decisions" if sc == "evaluations" else "rate"
    v = float(re.search(key + r"=([0-9.]+)", rest).group(1))
    runs.setdefault(sc, {}).setdefault(label, []).append(v)
print(f"{'scenario':<12} {'old median':>12} {'new median':>12} {'new/old':>8}   (per second; evaluations: decisions/s)")
for sc, by in runs.items():
    o, n = statistics.median(by.get("old", [0])), statistics.median(by.get("new", [0]))
    print(f"{sc:<12} {o:>12.0f} {n:>12.0f} {n / o if o else 0:>8.3f}")
EOF
