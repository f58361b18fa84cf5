#!/usr/bin/env bash
# The whole test suite: makes sure PostgreSQL is reachable (the storage conformance suite
# runs against SQLite *and* PostgreSQL), then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
REMIT_TEST_PG_URL=$(scripts/ensure-postgres.sh)
export REMIT_TEST_PG_URL
exec cargo test --workspace "$@"
