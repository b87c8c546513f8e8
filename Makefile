# The two commands of the README: `make demo` and `make test`. Both install
# what is missing first (Debian packages, runsc) and build the binaries.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin

.PHONY: all build deps demo test unit bench clean cross

all: build

deps:
	./scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/wisp-agent ./cmd/wisp-agent
	$(GO) build -o $(BIN)/wispd ./cmd/wispd
	$(GO) build -o $(BIN)/wisp ./cmd/wisp
	$(GO) build -o $(BIN)/wisp-devcluster ./cmd/wisp-devcluster

demo: deps build
	./scripts/demo.sh

# Everything: vet, unit tests, the conformance suites on the real backends,
# and the integration tests driving the real binaries.
test: deps build cross
	$(GO) vet ./...
	WISP_BIN=$(BIN) $(GO) test -count=1 -timeout 30m ./...

# The CLI and the SDK build and vet for a Mac: they link nothing of the
# daemon (cmd/wisp's TestCLIDeps names the packages they must not).
cross:
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/wisp
	GOOS=darwin $(GO) vet ./cmd/wisp ./client ./api ./internal/cli

# Unit tests only (no VMs).
unit:
	$(GO) test -count=1 -short ./...

bench: deps build
	./scripts/bench.sh

clean:
	rm -rf $(BIN)
