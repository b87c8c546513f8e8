#!/usr/bin/env bash
# The tour of wisp on its defaults: a daemon with no layout flags (only its
# data dir and socket), sprites on both backends, Claude Code and sudo in a
# fresh dev sprite, env and secrets, an image of one's own, commands,
# copies, a kill -9 of the daemon that the sprites and their files survive,
# timings, clean-up. The data dir (and with it the built images, in the
# storage pool) is kept in /var/lib/wisp-demo between demos; sprites are not.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DEMO=$(mktemp -d /tmp/wisp-demo.XXXX)
DATA=${WISP_DEMO_DATA:-/var/lib/wisp-demo}   # short: unix socket paths live below it
export WISP_SOCKET=$DEMO/wisp.sock
mkdir -p "$DATA"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=0; tic() { t0=$(date +%s%N); }
toc() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); TIMES+=("$1: ${ms} ms"); printf '   (%s ms)\n' "$ms"; }
TIMES=()
PID=""
cleanup() {
  step "clean-up"
  for s in $("$BIN/wisp" list --json 2>/dev/null | python3 -c 'import json,sys; print(" ".join(s["name"] for s in json.load(sys.stdin)))' 2>/dev/null); do
    "$BIN/wisp" destroy "$s" || true
  done
  "$BIN/wisp" image rm mytools >/dev/null 2>&1 || true
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  # runsc keeps one network-namespace mount for all its sandboxes; the
  # pool stays mounted when wispd stops (sprites may run on): unmount both.
  findmnt -rn -o TARGET | grep -e "^$DEMO/" -e "^$DATA/" | sort -r | xargs -r umount -l || true
  cp "$DEMO/wispd.log" /tmp/wisp-demo-wispd.log 2>/dev/null && echo "   the daemon's log: /tmp/wisp-demo-wispd.log"
  rm -rf "$DEMO"
}
trap cleanup EXIT

start_daemon() {
  # The API over TCP on a port of the demo's own (a real wispd may hold
  # the default 7781).
  "$BIN/wispd" --data-dir "$DATA" --socket "$WISP_SOCKET" --allow-tcg --listen 127.0.0.1:7791 --meter-interval 2s >>"$DEMO/wispd.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 500); do [ -S "$WISP_SOCKET" ] && "$BIN/wisp" list >/dev/null 2>&1 && return; sleep 0.02; done
  echo "wispd did not start:"; cat "$DEMO/wispd.log"; exit 1
}

step "start wispd (data dir $DATA)"
tic; start_daemon; toc "daemon start"
"$BIN/wisp" doctor

step "build the default image, dev (Debian bookworm, Claude Code, Node.js, Go, Python, build tools; kept in $DATA)"
built() { "$BIN/wisp" image list --json | python3 -c "import json,sys; sys.exit(0 if any(i['name']=='$1' and i['built'] for i in json.load(sys.stdin)) else 1)"; }
if built dev; then echo "   dev is built (in the pool under $DATA); rebuild with: wisp image build dev"; else tic; "$BIN/wisp" image build dev; toc "image build dev"; fi
built minimal || "$BIN/wisp" image build minimal >/dev/null
"$BIN/wisp" image list

step "create a sprite on the default backend (auto), and one on QEMU"
tic; "$BIN/wisp" create dev; toc "create dev (auto backend)"
tic; "$BIN/wisp" create vm --backend qemu --memory 512 --idle never; toc "create vm (qemu, cold boot; builds its warm snapshot)"
"$BIN/wisp" list

step "run commands: as the sprite user, with real toolchains"
tic; "$BIN/wisp" exec dev -- sh -c 'echo "hello from $(hostname) as $(whoami), kernel $(uname -r)"'; toc "exec round trip (dev)"
"$BIN/wisp" exec dev -- sh -c 'claude --version; python3 --version; node --version; go version; gcc --version | head -1; git --version; gh --version | head -1'
step "sudo works for the sprite user (gVisor honours set-user-ID inside the sandbox only)"
"$BIN/wisp" exec dev -- sh -c 'sudo -n id -u && sudo -n apt-get clean && echo "   sudo apt-get: ok"'

step "a fresh sprite has Claude Code; env and secrets reach every exec"
tic; "$BIN/wisp" create agent --env GIT_AUTHOR_NAME=agent; toc "create agent (dev image, default backend)"
"$BIN/wisp" exec agent -- claude --version
printf 'sk-ant-demo-not-a-real-key\n' | "$BIN/wisp" secret set agent ANTHROPIC_API_KEY
"$BIN/wisp" secret list agent
"$BIN/wisp" exec agent -- sh -c 'echo "   GIT_AUTHOR_NAME=$GIT_AUTHOR_NAME, ANTHROPIC_API_KEY has ${#ANTHROPIC_API_KEY} characters"'
"$BIN/wisp" info agent | grep -c sk-ant-demo | sed 's/^/   times the key appears in wisp info: /' || true

step "an image of your own: dev plus a recipe, then a sprite of it"
tic; "$BIN/wisp" image build mytools --from dev --run 'echo "built by a wisp recipe" > /etc/motd' --run 'apt-get clean'; toc "image build mytools --from dev"
"$BIN/wisp" image info mytools | grep -E 'from|run'
tic; "$BIN/wisp" create mine --image mytools; toc "create from mytools"
"$BIN/wisp" exec mine -- cat /etc/motd
"$BIN/wisp" destroy mine
"$BIN/wisp" exec vm -- sh -c 'echo "hello from $(hostname), kernel $(uname -r), $(nproc) cpu"'
echo 'print(sum(range(10**6)))' | "$BIN/wisp" exec dev -- python3 -
set +e; "$BIN/wisp" exec dev -- sh -c 'exit 42'; echo "   exit code came back: $?"; set -e

step "copy files in and out"
head -c 20000000 /dev/urandom > "$DEMO/blob"
tic; "$BIN/wisp" cp "$DEMO/blob" dev:/home/sprite/blob; toc "cp 20 MB in"
tic; "$BIN/wisp" cp dev:/home/sprite/blob "$DEMO/blob.back"; toc "cp 20 MB out"
echo "   host   $(sha256sum < "$DEMO/blob" | cut -c1-16)"
echo "   sprite $("$BIN/wisp" exec dev -- sha256sum /home/sprite/blob | cut -c1-16)"
echo "   back   $(sha256sum < "$DEMO/blob.back" | cut -c1-16)"
"$BIN/wisp" exec vm -- sh -c 'echo "written before the crash" > /home/sprite/note'

step "network: the internet (here: the package mirrors), never the host; a live egress policy"
"$BIN/wisp" info dev | grep -E '^(address|egress)'
MIRROR=$("$BIN/wisp" exec dev -- sh -c "grep -rhoE 'https?://[^ /]+' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | head -1 | sed 's,.*://,,'")
tic; "$BIN/wisp" exec dev --user root -- sh -c 'apt-get update 2>&1 | tail -1'; toc "apt-get update in a sprite"
python3 -m http.server 18080 --bind 0.0.0.0 >/dev/null 2>&1 & HTTPD=$!
sleep 0.5
GW=$("$BIN/wisp" info dev --json | python3 -c 'import json,sys,ipaddress; print(ipaddress.ip_address(json.load(sys.stdin)["address"])-1)')
"$BIN/wisp" exec dev -- sh -c "curl -s -m 3 -o /dev/null http://$GW:18080/ && echo '   reached the host: WRONG' || echo '   a server on the host (0.0.0.0:18080, via $GW): not reachable'"
kill $HTTPD
"$BIN/wisp" policy set dev --allow "$MIRROR"
"$BIN/wisp" exec dev -- sh -c "curl -s -m 5 -o /dev/null -w '   $MIRROR: HTTP %{http_code}\n' http://$MIRROR/; getent hosts registry.npmjs.org >/dev/null && echo '   registry.npmjs.org resolves: WRONG' || echo '   registry.npmjs.org: refused by the policy'"
"$BIN/wisp" policy set dev --allow-all

step "a second QEMU sprite comes from the warm snapshot"
for _ in $(seq 1 1200); do ls "$DATA/pool/templates" 2>/dev/null | grep -v tmp | grep -q '^qemu-dev-' && break; sleep 0.1; done
tic; "$BIN/wisp" create vm2 --backend qemu --memory 512; toc "create vm2 (qemu, warm snapshot)"
"$BIN/wisp" exec vm2 -- sh -c 'echo "hello from $(hostname), up $(cut -d" " -f1 /proc/uptime) s"'

step "kill -9 the daemon; the sprites keep running and are adopted"
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
tic; start_daemon; toc "daemon restart + adopt"
"$BIN/wisp" list
"$BIN/wisp" exec vm -- cat /home/sprite/note
echo "   blob in dev: $("$BIN/wisp" exec dev -- sha256sum /home/sprite/blob | cut -c1-16)"

step "checkpoint, break, restore; fork"
"$BIN/wisp" exec dev -- sh -c 'mkdir -p ~/proj && echo "def main(): pass" > ~/proj/app.py'
tic; "$BIN/wisp" checkpoint create dev --comment "before the agent ran"; toc "checkpoint create (running sprite)"
"$BIN/wisp" exec dev -- sh -c 'rm -rf ~/proj ~/blob; ls -la ~'
tic; "$BIN/wisp" restore dev v1; toc "restore v1 (gvisor)"
"$BIN/wisp" exec dev -- cat /home/sprite/proj/app.py
tic; "$BIN/wisp" fork dev --from v1 dev2; toc "fork dev2 from v1"
"$BIN/wisp" exec dev2 -- sh -c 'echo "in $(hostname): $(cat ~/proj/app.py)"'
"$BIN/wisp" checkpoint list dev

step "memory checkpoint: a running counter resumes where it was"
"$BIN/wisp" exec vm -- sh -c "setsid sh -c 'i=0; while true; do i=\$((i+1)); echo \$i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done' </dev/null >/dev/null 2>&1 &"
sleep 1
tic; "$BIN/wisp" checkpoint create vm --memory; toc "memory checkpoint (qemu)"
echo "   counter at checkpoint: $("$BIN/wisp" exec vm -- cat /tmp/n)"; sleep 2
echo "   counter later:         $("$BIN/wisp" exec vm -- cat /tmp/n)"
tic; "$BIN/wisp" restore vm v1; toc "restore with memory (qemu)"
echo "   counter after restore: $("$BIN/wisp" exec vm -- cat /tmp/n)"

step "sleep and wake: processes keep running"
tic; "$BIN/wisp" sleep vm; toc "sleep (qemu)"
"$BIN/wisp" list
tic; echo "   counter after wake: $("$BIN/wisp" exec vm -- cat /tmp/n)"; toc "wake + exec (qemu)"
"$BIN/wisp" info vm | grep "last wake"

step "stop and start: the disk keeps everything"
"$BIN/wisp" stop vm
tic; "$BIN/wisp" start vm; toc "start vm (qemu cold boot)"
"$BIN/wisp" exec vm -- cat /home/sprite/note

step "sessions: a command that outlives its client"
SID=$("$BIN/wisp" exec dev --detach -- sh -c 'for i in 1 2 3; do echo "tick $i"; sleep 1; done')
echo "   detached session $SID"
"$BIN/wisp" sessions dev
"$BIN/wisp" attach dev "$SID"

step "the API over TCP with a token, as a remote agent or an SDK uses it"
TOKEN=$("$BIN/wisp" token create --name demo --sprite dev --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
echo "   a token scoped to dev: ${TOKEN:0:12}..."
"$BIN/wisp" --host http://127.0.0.1:7791 --token "$TOKEN" list
"$BIN/wisp" --host http://127.0.0.1:7791 --token "$TOKEN" exec dev -- uname -sr
"$BIN/wisp" --host http://127.0.0.1:7791 --token "$TOKEN" info vm 2>&1 | sed 's/^/   (another sprite) /' || true
"$BIN/wisp" token revoke demo

step "usage: what each sprite used, and what it would cost"
"$BIN/wisp" usage
"$BIN/wisp" top --once

step "benchmark (both backends, dev and minimal images)"
"$BIN/wisp" bench --runs 3 --backend both --out "$DEMO/bench.json" 2>/dev/null

step "timings"
printf '   %s\n' "${TIMES[@]}"
