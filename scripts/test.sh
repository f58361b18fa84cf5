#!/usr/bin/env bash
# The whole test suite: makes sure PostgreSQL is reachable (the storage conformance suite
# runs against SQLite *and* PostgreSQL), the shared test Python environment (.venv, from
# tests/python/requirements.txt) is built and the OpenID provider harness's node packages
# (tests/oidc) are installed, then runs every test in the workspace.
# Tests find that interpreter in REMIT_TEST_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
REMIT_TEST_PG_URL=$(scripts/ensure-postgres.sh)
export REMIT_TEST_PG_URL
REMIT_TEST_PYTHON=$(scripts/python-env.sh)
export REMIT_TEST_PYTHON
# The one OpenID provider harness (npm oidc-provider, from tests/oidc/package-lock.json).
REMIT_TEST_OIDC_PROVIDER=$(scripts/oidc-env.sh)
export REMIT_TEST_OIDC_PROVIDER
exec cargo test --workspace "$@"
