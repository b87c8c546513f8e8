#!/usr/bin/env bash
# Regenerates the Go code of the envd protocol (internal/e2b/envd) from its
# .proto files: protoc (Debian's protobuf-compiler) with protoc-gen-go and
# protoc-gen-connect-go at the versions go.mod pins.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || apt-get install -y protobuf-compiler
bin=$(mktemp -d); trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go
GOBIN=$bin go install connectrpc.com/connect/cmd/protoc-gen-connect-go
src=internal/e2b/envd/proto
PATH=$bin:$PATH protoc -I "$src" -I /usr/include \
  --go_out=. --go_opt=module=github.com/wisp-sh/wisp \
  --connect-go_out=. --connect-go_opt=module=github.com/wisp-sh/wisp \
  "$src/process/process.proto" "$src/filesystem/filesystem.proto"
