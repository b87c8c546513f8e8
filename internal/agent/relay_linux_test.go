package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRelayParkWaitsForPeer: park succeeds only once the peer has read
// every byte written (those left in the socket would be lost with a VMM
// that exits), and a parked relay's reads outlive the end of its
// connection until one is attached.
func TestRelayParkWaitsForPeer(t *testing.T) {
	pair := func() (net.Conn, net.Conn) {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		var cs [2]net.Conn
		for i, fd := range fds {
			f := os.NewFile(uintptr(fd), "pair")
			cs[i], err = net.FileConn(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cs[i].Close() })
		}
		return cs[0], cs[1]
	}
	host, peer := pair()
	r := newRelay(host)
	if _, err := r.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := r.park(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "has not taken what was written") {
		t.Fatalf("park with unread bytes: %v", err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(peer, buf); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.park(ctx); err != nil {
		t.Fatalf("park once read: %v", err)
	}
	wrote := make(chan error, 1)
	go func() { _, err := r.Write([]byte("after")); wrote <- err }()
	got := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(io.LimitReader(r, 9))
		if err != nil {
			b = append(b, err.Error()...)
		}
		got <- string(b)
	}()
	peer.Write([]byte("old"))
	peer.Close() // the VMM exits: the relay's read must not end
	select {
	case err := <-wrote:
		t.Fatalf("a write went through a parked relay: %v", err)
	case s := <-got:
		t.Fatalf("read ended with the old connection: %q", s)
	case <-time.After(50 * time.Millisecond):
	}
	host2, peer2 := pair()
	r.attach(host2)
	peer2.Write([]byte("new"))
	r.unpark()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(peer2, b); err != nil || string(b) != "after" {
		t.Fatalf("write after attach: %q %v", b, err)
	}
	peer2.Write([]byte("!!!"))
	if s := <-got; s != "oldnew!!!" {
		t.Fatalf("read across the swap: %q", s)
	}
}
