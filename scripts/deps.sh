#!/usr/bin/env bash
# Installs what wisp needs on a fresh Debian machine: QEMU, e2fsprogs,
# debootstrap and friends from apt; runsc (gVisor) at a pinned version with
# go install. Idempotent: installs only what is missing.
set -euo pipefail

RUNSC_VERSION=v0.0.0-20260905035102-160fafc42237 # gvisor.dev/gvisor, tested
RUNSC_DIR=/usr/local/libexec/wisp

need=()
for pair in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils debootstrap:debootstrap \
            mkfs.ext4:e2fsprogs resize2fs:e2fsprogs mkfs.xfs:xfsprogs xfs_growfs:xfsprogs lz4:lz4 cpio:cpio xz:xz-utils; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
elif ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  # wisp fetches the guest kernel and busybox with apt-get download.
  $sudo apt-get update -qq
fi

if [ ! -x "$RUNSC_DIR/runsc" ] || [ "$(cat "$RUNSC_DIR/runsc.version" 2>/dev/null)" != "$RUNSC_VERSION" ]; then
  echo "deps: building runsc $RUNSC_VERSION (about a minute)"
  $sudo mkdir -p "$RUNSC_DIR"
  tmp=$(mktemp -d)
  CGO_ENABLED=0 GOBIN="$tmp" go install "gvisor.dev/gvisor/runsc@$RUNSC_VERSION"
  $sudo install -m 0755 "$tmp/runsc" "$RUNSC_DIR/runsc"
  echo "$RUNSC_VERSION" | $sudo tee "$RUNSC_DIR/runsc.version" >/dev/null
  rm -rf "$tmp"
fi
