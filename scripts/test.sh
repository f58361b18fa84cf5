#!/usr/bin/env bash
# The whole test suite: makes sure PostgreSQL is reachable (the storage conformance suite
# runs against SQLite *and* PostgreSQL) and the shared test Python environment (.venv, from
# tests/python/requirements.txt) is built, then runs every test in the workspace.
# Tests find that interpreter in REMIT_TEST_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
REMIT_TEST_PG_URL=$(scripts/ensure-postgres.sh)
export REMIT_TEST_PG_URL
REMIT_TEST_PYTHON=$(scripts/python-env.sh)
export REMIT_TEST_PYTHON
exec cargo test --workspace "$@"
