#!/usr/bin/env bash
# Installs the published e2b npm SDK at the pinned version into DIR
# (default bin/e2b-sdk, the build dir), once: the E2B tests and
# `wisp bench e2b` run real SDK code from there. Prints DIR.
set -euo pipefail
VERSION=${E2B_SDK_VERSION:-2.51.0}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/bin/e2b-sdk}
pkg=$dir/node_modules/e2b/package.json
if [ -f "$pkg" ] && grep -q "\"version\": \"$VERSION\"" "$pkg"; then
  echo "$dir"; exit 0
fi
command -v npm >/dev/null || { echo "npm is not installed: the E2B SDK tests need Node.js and npm" >&2; exit 1; }
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"private": true, "type": "module"}' > "$dir/package.json"
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error "e2b@$VERSION" >&2)
echo "$dir"
