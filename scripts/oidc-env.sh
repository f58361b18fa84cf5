#!/usr/bin/env bash
# Makes sure the ONE test OpenID provider (tests/oidc: panva's oidc-provider, see its README)
# is installed exactly as its lockfile says, and prints the absolute path of the script to run
# with node (the only line on stdout; logs go to stderr), e.g.
#   REMIT_TEST_OIDC_PROVIDER=$(scripts/oidc-env.sh)
#   node "$REMIT_TEST_OIDC_PROVIDER" --config my-config.json   # prints {"issuer": ..., "pid": ...}
#
# tests/oidc/node_modules (git-ignored) is (re)built with `npm ci` from
# tests/oidc/package-lock.json; a stamp inside it records the lockfile's sha256 and the node
# version, so when nothing changed this returns at once. `npm ci` deletes node_modules first,
# so after a change it holds exactly what the lock says.
#
# Environment: NODE (the node binary, default node; npm is taken from next to it, else PATH),
# NPM (the npm binary). Needs Node >= 20.19 (oidc-provider 9 runs on it; it prefers 22 LTS and
# warns on 20).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { echo "oidc-env: $*" >&2; }

dir="$repo/tests/oidc"
lock="$dir/package-lock.json"
script="$dir/provider.mjs"
modules="$dir/node_modules"
stamp="$modules/.remit-env-stamp"
node_bin="${NODE:-node}"
min_node=20.19.0

[ -f "$lock" ] || { log "missing $lock"; exit 1; }
[ -f "$script" ] || { log "missing $script"; exit 1; }

command -v "$node_bin" >/dev/null || {
  log "no '$node_bin' on PATH: the OIDC tests need Node.js >= $min_node (22 LTS preferred) and npm;"
  log "install them (e.g. apt-get install nodejs npm, or https://nodejs.org) or set NODE=/path/to/node"
  exit 1
}
node_ver=$("$node_bin" -p 'process.versions.node' 2>/dev/null) || { log "'$node_bin' does not run"; exit 1; }
if ! "$node_bin" -e '
  const [a, b, c] = process.argv[1].split(".").map(Number);
  const [x, y, z] = process.versions.node.split(".").map(Number);
  process.exit(x > a || (x === a && (y > b || (y === b && z >= c))) ? 0 : 1);
' "$min_node"; then
  log "node $node_ver ($(command -v "$node_bin")) is too old: the test OP (oidc-provider 9) needs Node.js >= $min_node"
  exit 1
fi

if [ -n "${NPM:-}" ]; then
  npm_bin=$NPM
elif [ -x "$(dirname "$(command -v "$node_bin")")/npm" ]; then
  npm_bin="$(dirname "$(command -v "$node_bin")")/npm"
else
  npm_bin=npm
fi

# One installer at a time (two test runs starting together); the lockfile itself is the lock.
if command -v flock >/dev/null; then
  exec 9<"$lock"
  flock 9
fi

want="lock=$(sha256sum "$lock" | cut -d' ' -f1) node=$node_ver"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -f "$modules/oidc-provider/package.json" ]; then
  command -v "$npm_bin" >/dev/null || { log "no npm ('$npm_bin'); install npm (it comes with Node.js) or set NPM"; exit 1; }
  log "installing $dir from package-lock.json (npm ci; node $node_ver)"
  rm -f "$stamp"
  # npm ci: exactly the lockfile, never rewrites it; fails if package.json and the lock disagree.
  (cd "$dir" && "$npm_bin" ci --no-audit --no-fund --loglevel=error) >&2
  printf '%s\n' "$want" >"$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
fi

echo "$script"
