#!/usr/bin/env bash
# Makes sure the ONE Python environment every test uses exists and matches the lockfile, and
# prints its interpreter's path (the only line on stdout; logs go to stderr), e.g.
#   REMIT_TEST_PYTHON=$(scripts/python-env.sh)
#
# The venv lives at <repo>/.venv (git-ignored). It is (re)built from
# tests/python/requirements.txt with `pip install --require-hashes`; a stamp inside the venv
# records the lockfile's sha256, so when nothing changed this returns at once. When the lock
# changed the venv is rebuilt from scratch, so it holds exactly what the lock says.
# If sdk/python/pyproject.toml exists, the in-repo Python SDK is installed into it in editable
# mode (no build isolation, no index: its build backend comes from the lock).
#
# Environment: PYTHON (base interpreter, default python3; the lock targets CPython 3.11),
# REMIT_SDK_DIR (the SDK's directory, default sdk/python; for testing this script).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { echo "python-env: $*" >&2; }

venv="$repo/.venv"
lock="$repo/tests/python/requirements.txt"
stamp="$venv/.remit-env-stamp"
sdk_dir="${REMIT_SDK_DIR:-$repo/sdk/python}"
base_py="${PYTHON:-python3}"

[ -f "$lock" ] || { log "missing $lock"; exit 1; }
command -v "$base_py" >/dev/null || { log "no $base_py; install CPython 3.11 (or set PYTHON)"; exit 1; }

# One builder at a time (two test runs starting together); the lockfile itself is the lock.
if command -v flock >/dev/null; then
  exec 9<"$lock"
  flock 9
fi

sha() { sha256sum "$1" | cut -d' ' -f1; }
stamp_get() { [ -f "$stamp" ] && sed -n "s/^$1=//p" "$stamp" | head -1 || true; }

base_ver=$("$base_py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
case "$base_ver" in
  3.11.*) ;;
  *) log "warning: $base_py is Python $base_ver; the lock targets 3.11 (set PYTHON=python3.11)" ;;
esac

want_lock=$(sha "$lock")
if [ -f "$sdk_dir/pyproject.toml" ]; then
  want_sdk="$(sha "$sdk_dir/pyproject.toml") $(cd "$sdk_dir" && pwd -P)"
else
  want_sdk=none
fi

venv_ok() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null &&
    [ "$(stamp_get lock)" = "$want_lock" ] && [ "$(stamp_get python)" = "$base_ver" ]
}

write_stamp() {
  printf 'lock=%s\npython=%s\nsdk=%s\n' "$want_lock" "$base_ver" "$1" >"$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
}

if ! venv_ok || { [ "$(stamp_get sdk)" != none ] && [ "$want_sdk" = none ]; }; then
  # New, changed lockfile, other interpreter, broken venv, or an SDK that is gone: rebuild.
  log "building $venv from tests/python/requirements.txt (Python $base_ver)"
  rm -f "$stamp"
  "$base_py" -m venv --clear "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes -r "$lock" >&2
  write_stamp none
fi

if [ "$want_sdk" != none ] && [ "$(stamp_get sdk)" != "$want_sdk" ]; then
  log "installing the Python SDK from $sdk_dir (editable)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-index --no-deps --no-build-isolation --editable "$sdk_dir" >&2
  write_stamp "$want_sdk"
fi

echo "$venv/bin/python"
