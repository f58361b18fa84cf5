# Sourced by the load scripts (not run on its own): builds the release binaries and starts
# one `remit serve` on a free loopback port with a fresh data directory.
#   start_remit [STORE]  sets $data and $pid, exports REMIT_URL and REMIT_ADMIN_TOKEN
#   stop_remit           stops it and removes the data directory
#   server_cpu           CPU seconds (user+system) the server has used so far
cargo build --release -q -p remit -p remit-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
start_remit() {
  local port
  data=$(mktemp -d)
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  RUST_LOG=warn "$bin/remit" serve --data-dir "$data" --listen "127.0.0.1:$port" --store "${1:-sqlite}" \
    >"$data/serve.out" 2>"$data/serve.err" &
  pid=$!
  # Not on a terminal, serve prints no banner: wait until it answers.
  for _ in $(seq 200); do [ -s "$data/admin-token" ] && curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || { cat "$data/serve.err" >&2; return 1; }
  export REMIT_URL="http://127.0.0.1:$port" REMIT_ADMIN_TOKEN=$(cat "$data/admin-token")
}
stop_remit() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "${data:-}" ]; then rm -rf "$data"; fi
}
server_cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat"; }
