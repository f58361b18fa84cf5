#!/usr/bin/env bash
# Checks the deployment files that are not code:
#   1. the systemd unit shown in docs/DEPLOYMENT.md ("Running under systemd") is identical
#      to docs/examples/remit.service (always);
#   2. docs/examples/remit.service passes `systemd-analyze verify` with no message at all
#      (only where systemd-analyze exists; otherwise a note says it was skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

unit=docs/examples/remit.service
doc=docs/DEPLOYMENT.md
first_line="# /etc/systemd/system/remit.service"

tmp=$(mktemp -d /tmp/remit-deploy-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# 1. The fenced block in the doc whose first line is the unit's own first line.
awk -v first="$first_line" -v out="$tmp/from-doc.service" '
  /^```/ {
    if (inblock) { inblock = 0; if (take) { take = 0; done++ } ; next }
    inblock = 1; start = 1; next
  }
  inblock && start { start = 0; if (index($0, first) == 1) take = 1 }
  take { print > out }
  END { if (done != 1) { printf "found %d unit blocks\n", done > "/dev/stderr"; exit 1 } }
' "$doc" || { echo "check-deploy-files: $doc must show the unit exactly once, in a fenced block starting with '$first_line'" >&2; exit 1; }
if ! diff -u "$unit" "$tmp/from-doc.service" >&2; then
  echo "check-deploy-files: the unit in $doc differs from $unit (above: -file +doc); make them identical" >&2
  exit 1
fi
echo "check-deploy-files: the unit in $doc is identical to $unit"

# 2. systemd-analyze verify. It also checks that ExecStart's binary exists, which it does not
# on a build machine: verify a copy whose ExecStart points at a stub instead (same arguments).
if ! command -v systemd-analyze >/dev/null; then
  echo "check-deploy-files: note: systemd-analyze not found; skipped 'systemd-analyze verify' of $unit"
  exit 0
fi
bin=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[ -n "$bin" ] || { echo "check-deploy-files: $unit has no ExecStart=" >&2; exit 1; }
printf '#!/bin/sh\nexit 0\n' >"$tmp/remit"
chmod +x "$tmp/remit"
sed "s#^ExecStart=$bin#ExecStart=$tmp/remit#" "$unit" >"$tmp/remit.service"
opts=(--man=no)
if systemd-analyze --help 2>/dev/null | grep -q -- '--recursive-errors'; then
  opts+=(--recursive-errors=no) # only this unit's own problems, not the host's units
fi
rc=0
out=$(systemd-analyze verify "${opts[@]}" "$tmp/remit.service" 2>&1) || rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
  echo "${out//"$tmp/remit.service"/$unit}" >&2
  echo "check-deploy-files: systemd-analyze verify $unit failed (exit $rc; every message counts)" >&2
  exit 1
fi
echo "check-deploy-files: systemd-analyze verify $unit: clean ($(systemd-analyze --version | head -1))"
