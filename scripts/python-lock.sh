#!/usr/bin/env bash
# Regenerates tests/python/requirements.txt, the hashed lockfile of the shared test Python
# environment, from the top-level pins in tests/python/requirements.in.
#
#   scripts/python-lock.sh             # re-lock the pins as they are
#   scripts/python-lock.sh --upgrade   # also move unpinned transitive dependencies forward
#
# Runs pip-tools' pip-compile --generate-hashes from a throwaway venv in /tmp (nothing is
# installed into the repository or .venv). Needs CPython 3.11 (the target) and PyPI.
# Afterwards run scripts/python-env.sh: it notices the new lockfile and reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_TOOLS_VERSION=7.6.2
py="${PYTHON:-python3}"
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$ver" != "3.11" ]; then
  echo "python-lock: $py is Python $ver; the lock targets 3.11 (set PYTHON=python3.11)" >&2
  exit 1
fi

tmp=$(mktemp -d /tmp/remit-pip-compile.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION" >&2

# --allow-unsafe: setuptools and wheel are pinned too (the SDK's editable install builds
# without isolation from what the lock installed). --no-emit-*: keep the machine's pip
# configuration (index mirrors, find-links) out of the committed file.
CUSTOM_COMPILE_COMMAND="scripts/python-lock.sh" \
  "$tmp/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
  --cache-dir "$tmp/cache" \
  --output-file tests/python/requirements.txt "$@" tests/python/requirements.in
{
  echo "# The hashed lockfile of the shared test Python environment (<repo>/.venv, built by"
  echo "# scripts/python-env.sh with pip install --require-hashes). Do not edit by hand: change the"
  echo "# top-level pins in tests/python/requirements.in, then regenerate this file with"
  echo "#   scripts/python-lock.sh [--upgrade]"
  echo "# (pip-tools' pip-compile --generate-hashes --allow-unsafe, run from a throwaway venv in"
  echo "# /tmp with CPython 3.11, the target)."
  cat tests/python/requirements.txt
} >"$tmp/requirements.txt"
mv "$tmp/requirements.txt" tests/python/requirements.txt
echo "python-lock: wrote tests/python/requirements.txt" >&2
