#!/usr/bin/env bash
# The triage example end to end, unattended, in a throwaway data directory: starts Remit,
# creates the `triage` workflow and its agent, checks the policies offline and pushes them,
# runs examples/agents/triage_agent.py as one task under `remit exec`, approves its write as
# the workflow's owner when it asks, shows the audit trail, then pulls the kill switch.
#
#   examples/agents/demo.sh            # uses target/release/remit (builds it if missing)
#   REMIT_BIN=/path/to/remit examples/agents/demo.sh
#
# Needs python3 (3.9+); the SDK is used from sdk/python in this clone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${REMIT_BIN:-$repo/target/release/remit}
if [ ! -x "$bin" ]; then
  echo "demo: building $bin" >&2
  (cd "$repo" && cargo build --release --bin remit)
fi
py=${PYTHON:-python3}

data=$(mktemp -d)
port=$("$py" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
export REMIT_URL="http://127.0.0.1:$port" REMIT_DATA_DIR="$data"
remit() { "$bin" "$@"; }   # (background processes run "$bin" itself, so $! is theirs)
cleanup() {
  [ -n "${agent:-}" ] && kill "$agent" 2>/dev/null || true
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "start Remit ($REMIT_URL, data in $data)"
"$bin" serve --listen "127.0.0.1:$port" >/dev/null 2>"$data/serve.log" &
server=$!
for _ in $(seq 100); do "$py" -c "import urllib.request as u; u.urlopen('$REMIT_URL/healthz')" 2>/dev/null && break; sleep 0.1; done

step "the triage workflow, its agent, its policies (checked offline first)"
remit workflow create triage --purpose "triage new tickets" --owner alice@example.com \
  --tool jira.read --tool jira.write --ceiling confidential
remit agent create triage-bot --workflow triage
remit policy test "$here/cases.json"
remit policy push "$here/policies"

step "the agent runs as one task; it asks Remit before each call"
REMIT_JOIN_TOKEN=$(remit agent join-token triage-bot | tail -1) \
  "$bin" exec --local-demo --workflow triage --intent "triage new tickets" -- "$py" "$here/triage_agent.py" &
agent=$!

step "alice (the workflow's owner) approves the write the agent waits for"
for _ in $(seq 300); do
  id=$(remit --json approval list | "$py" -c 'import sys,json; l=json.load(sys.stdin); print(l[0]["id"] if l else "")')
  [ -n "$id" ] && break
  sleep 0.1
done
[ -n "$id" ] || { echo "demo: the agent never asked for approval" >&2; exit 1; }
remit --operator alice@example.com approval approve "$id" --reason "the comment looks right"
wait "$agent"
agent=

step "the audit trail of the workflow"
remit audit list --workflow triage

step "the kill switch: suspending the workflow ends every task of it"
remit workflow suspend triage --reason "demo over"
remit audit verify
