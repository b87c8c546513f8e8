package gvisor

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestRunscBounded: a runsc that never answers is killed when its time is
// up, and the caller gets an error that says so.
func TestRunscBounded(t *testing.T) {
	script := filepath.Join(t.TempDir(), "runsc")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := &Driver{Runsc: script, StateRoot: t.TempDir(), Log: slog.New(slog.DiscardHandler), Timeout: 300 * time.Millisecond}
	t0 := time.Now()
	_, _, err := d.state(context.Background(), vmm.Spec{ID: "x"})
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("state with a hung runsc: %v, want a timeout", err)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("state with a hung runsc took %s", took)
	}
}

// TestDetachBounded: a guest that never hangs up fails the detach (and so
// the save) within detachTimeout instead of holding the sprite for ever.
func TestDetachBounded(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, sockName), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	guest, err := net.Dial("unix", filepath.Join(dir, sockName))
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()
	host, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	// The guest answers the handshake, then reads to the host's
	// half-close and past it: it never closes its end.
	go func() {
		answered := ""
		for {
			kind, nonce, err := proto.ScanLine(guest, 1<<20, nil, proto.Hello, proto.Go)
			if err != nil {
				return
			}
			if kind == proto.Go && nonce == answered {
				io.Copy(io.Discard, guest)
				<-stop
			}
			if kind == proto.Hello && nonce != answered {
				guest.Write([]byte(proto.Ready + nonce + "\n"))
				answered = nonce
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ag, err := agent.Connect(ctx, host, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	i := &Instance{spec: vmm.Spec{Name: "stuck", Dir: dir}, d: &Driver{Log: slog.New(slog.DiscardHandler)}, ln: ln, ag: ag, conn: host}
	errc := make(chan error, 1)
	t0 := time.Now()
	go func() { errc <- i.detach(context.Background()) }()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "did not hang up") {
			t.Errorf("detach from a guest that never hangs up: %v", err)
		}
		t.Logf("detach gave up after %s", time.Since(t0).Round(time.Millisecond))
	case <-time.After(detachTimeout + 10*time.Second):
		t.Fatal("detach still waits for a guest that never hangs up")
	}
}
