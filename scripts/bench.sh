#!/usr/bin/env bash
# Runs `wisp bench --backend both` (dev and minimal images) against a daemon
# on a temporary data dir and leaves the JSON report in bench.json. Images
# are kept in ~/.cache/wisp-demo/images between runs (--images: each is
# copied into the temporary pool once, then sprites are reflinks of it).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DIR=$(mktemp -d /tmp/wisp-bench.XXXX)
CACHE=${WISP_DEMO_CACHE:-$HOME/.cache/wisp-demo}
export WISP_SOCKET=$DIR/wisp.sock
mkdir -p "$DIR/data" "$CACHE/images"
"$BIN/wispd" --data-dir "$DIR/data" --socket "$WISP_SOCKET" --images "$CACHE/images" --pool-size 50 --allow-tcg >"$DIR/wispd.log" 2>&1 &
PID=$!
cleanup() {
  kill $PID 2>/dev/null; wait $PID 2>/dev/null
  findmnt -rn -o TARGET | grep "^$DIR/" | sort -r | xargs -r umount -l || true
  rm -rf "$DIR"
}
trap cleanup EXIT
for _ in $(seq 1 500); do "$BIN/wisp" list >/dev/null 2>&1 && break; sleep 0.02; done
built() { "$BIN/wisp" image list --json | python3 -c "import json,sys; sys.exit(0 if any(i['name']=='$1' and i['built'] for i in json.load(sys.stdin)) else 1)"; }
built minimal || "$BIN/wisp" image build minimal >/dev/null
built dev || "$BIN/wisp" image build dev   # cached in $CACHE; imported into the pool once
"$BIN/wisp" bench --runs "${RUNS:-10}" --backend both --out bench.json "$@"
echo "JSON report: bench.json"
