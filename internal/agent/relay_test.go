package agent_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/guest"
)

// fakeVMM stands for a VMM between the host's unix socket and the guest's
// channel (a virtio-serial port): it copies both ways until stopped. The
// channel outlives it, as a guest's port outlives the QEMU that saved it.
type fakeVMM struct {
	host    net.Conn
	dev     net.Conn
	pause   chan struct{} // closed: the host-to-guest copy stops reading
	stopped sync.WaitGroup
}

// startVMM listens on a fresh socket, accepts the host and copies between
// it and dev. It returns the socket's path once listening.
func startVMM(t *testing.T, dev net.Conn, paused bool) (*fakeVMM, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	v := &fakeVMM{dev: dev, pause: make(chan struct{})}
	if !paused {
		close(v.pause)
	}
	accepted := make(chan struct{})
	v.stopped.Add(2)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		v.host = c
		close(accepted)
		go func() { // guest to host, until the device's read deadline
			defer v.stopped.Done()
			io.Copy(c, dev)
		}()
		defer v.stopped.Done()
		<-v.pause
		io.Copy(dev, c) // host to guest, until stop
	}()
	t.Cleanup(func() {
		select {
		case <-accepted:
		default:
			ln.Close()
		}
	})
	return v, sock
}

// stop ends the VMM without losing a byte the guest wrote: it stops both
// copies and closes the host's connection (the host reads EOF).
func (v *fakeVMM) stop() {
	v.host.SetReadDeadline(time.Now())
	v.dev.SetReadDeadline(time.Now())
	v.stopped.Wait()
	v.dev.SetReadDeadline(time.Time{})
	v.host.Close()
}

func dial(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// guestChannel runs a guest agent on one end of a socket pair and returns
// the other end (the device side).
func guestChannel(t *testing.T) net.Conn {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { conns[0].Close(); conns[1].Close() })
	srv := &guest.Server{Log: slog.New(slog.DiscardHandler), Reaper: reaper()}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	once := false
	go srv.Serve(ctx, func() (io.ReadWriteCloser, error) {
		if once {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		once = true
		return conns[0], nil
	})
	return conns[1]
}

// TestParkedSessionOutlivesVMM: a session parked before its VMM goes and
// attached to the next one goes on with no new handshake: calls and a
// streaming process after the swap work. A session with a call in flight
// is not parked.
func TestParkedSessionOutlivesVMM(t *testing.T) {
	dev := guestChannel(t)
	vmm1, sock1 := startVMM(t, dev, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := agent.Connect(ctx, dial(t, sock1), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	st, err := c.Open(ctx, proto.Request{Op: proto.OpInfo})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = c.Park(pctx)
	pcancel()
	if err == nil || !strings.Contains(err.Error(), "streams in use") {
		t.Fatalf("park with a call in flight: %v", err)
	}
	c.Unpark()
	if r, err := st.Response(); err != nil || r.Info == nil {
		t.Fatalf("info after a refused park: %+v %v", r, err)
	}
	st.Close()

	pctx, pcancel = context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	if err := c.Park(pctx); err != nil { // waits for the closed stream to go
		t.Fatal(err)
	}
	vmm1.stop()
	_, sock2 := startVMM(t, dev, false)
	c.Attach(dial(t, sock2))
	c.Unpark()

	var out strings.Builder
	exit, err := c.Exec(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo $i; i=$((i+1)); done"}},
		agent.ExecIO{Stdout: &out})
	if err != nil || exit.Code != 0 {
		t.Fatalf("exec after the swap: %+v %v", exit, err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for i, l := range lines {
		if l != strconv.Itoa(i) {
			t.Fatalf("line %d after the swap: %q", i, l)
		}
	}
	if len(lines) != 2000 {
		t.Fatalf("%d lines after the swap", len(lines))
	}
	if info, err := c.Info(ctx); err != nil || info.Kernel == "" {
		t.Fatalf("info after the swap: %+v %v", info, err)
	}
	select {
	case <-c.Closed():
		t.Fatal("session closed")
	default:
	}
}
