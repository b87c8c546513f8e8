package agent_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// hostileGuest is a test double of a guest agent that speaks the real
// protocol (the handshake, then yamux) and then breaks its rules. It
// returns the host's client and the guest's end of the channel, past the
// handshake.
func hostileGuest(t *testing.T) (*agent.Client, net.Conn) {
	t.Helper()
	host, guest := socketpair(t)
	handshook := make(chan struct{})
	go func() {
		defer close(handshook)
		answered := ""
		for {
			kind, nonce, err := proto.ScanLine(guest, 1<<20, nil, proto.Hello, proto.Go)
			if err != nil {
				return
			}
			if kind == proto.Go && nonce == answered {
				return
			}
			if kind == proto.Hello && nonce != answered {
				guest.Write([]byte(proto.Ready + nonce + "\n"))
				answered = nonce
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := agent.Connect(ctx, host, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// The guest's side is past the handshake once it has read the Go
	// line (Connect returns once it has written it).
	<-handshook
	return c, guest
}

// socketpair returns the two ends of a connected unix stream socket pair:
// the host's and the guest's (like the gVisor agent's socket).
func socketpair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("unix", dir+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	guest, err := net.Dial("unix", dir+"/s")
	if err != nil {
		t.Fatal(err)
	}
	host, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(); guest.Close() })
	return host, guest
}

// guestSession runs yamux's server end on the guest's side, as the agent
// does, with the guest's configuration.
func guestSession(t *testing.T, guest net.Conn) *yamux.Session {
	t.Helper()
	sess, err := yamux.Server(guest, agent.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// waitClosed waits for the host to end the session and checks why.
func waitClosed(t *testing.T, c *agent.Client) {
	t.Helper()
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("the host kept the session")
	}
	if !errors.Is(c.Err(), agent.ErrHostile) {
		t.Errorf("session ended with Err() = %v, want ErrHostile", c.Err())
	}
	if _, err := c.Open(context.Background(), proto.Request{Op: proto.OpInfo}); err == nil {
		t.Error("Open succeeded on a session the guest broke")
	}
}

// TestHostileGuestOpensStreams: a guest that opens streams (which the host
// never accepts: each would buffer a window of data) loses its session.
func TestHostileGuestOpensStreams(t *testing.T) {
	c, guest := hostileGuest(t)
	sess := guestSession(t, guest)
	go func() {
		for range 300 {
			s, err := sess.OpenStream()
			if err != nil {
				return
			}
			go s.Write(make([]byte, 1<<20))
		}
	}()
	waitClosed(t, c)
}

// TestHostileGuestPings: each ping is answered from a goroutine of its
// own; a guest that sends them loses its session.
func TestHostileGuestPings(t *testing.T) {
	c, guest := hostileGuest(t)
	sess := guestSession(t, guest)
	go sess.Ping()
	waitClosed(t, c)
}

// TestHostileGuestOverrunsWindow: a data frame larger than the stream's
// window ends the session instead of being buffered.
func TestHostileGuestOverrunsWindow(t *testing.T) {
	c, guest := hostileGuest(t)
	if _, err := c.Open(context.Background(), proto.Request{Op: proto.OpInfo}); err != nil { // stream 1
		t.Fatal(err)
	}
	const n = 2 << 20
	frame := make([]byte, 12+n)
	frame[1] = 0                               // data
	binary.BigEndian.PutUint16(frame[2:4], 2)  // ACK
	binary.BigEndian.PutUint32(frame[4:8], 1)  // stream 1
	binary.BigEndian.PutUint32(frame[8:12], n) // over any window but 16 MiB
	go guest.Write(frame)
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("the host buffered a frame over the window")
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestHostileGuestMemory: the guest writes as much as it may into every
// stream the host opened and does not read, and keeps writing after the
// host closed them, never closing its ends. The host holds at most a
// window per stream, drops the streams StreamCloseTimeout after closing
// them, and refuses streams beyond MaxStreams.
func TestHostileGuestMemory(t *testing.T) {
	c, guest := hostileGuest(t)
	sess := guestSession(t, guest)
	// The guest: each stream the host opens gets data until its window
	// is full (the write then blocks until its deadline) and reports how
	// much went through.
	wrote := make(chan int, agent.MaxStreams)
	go func() {
		for {
			s, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				s.SetWriteDeadline(time.Now().Add(3 * time.Second))
				n, _ := s.Write(make([]byte, 32<<20))
				wrote <- n
			}()
		}
	}()

	const streams = 16
	base := heapAlloc()
	ctx := context.Background()
	var open []*agent.Stream
	for range streams {
		s, err := c.Open(ctx, proto.Request{Op: proto.OpInfo})
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s) // never read
	}
	written := 0
	for range streams {
		select {
		case n := <-wrote:
			written += n
		case <-time.After(30 * time.Second):
			t.Fatal("guest writers did not finish")
		}
	}
	held := int64(heapAlloc()) - int64(base)
	// The bound: a window per stream, with the buffer's slack, plus 4 MiB
	// for everything else.
	bound := int64(streams*agent.StreamWindow*2 + 4<<20)
	t.Logf("guest wrote %d KiB into %d unread streams; host heap grew %d KiB (bound %d KiB)",
		written>>10, streams, held>>10, bound>>10)
	if written > streams*agent.StreamWindow {
		t.Errorf("guest wrote %d bytes, more than %d windows of %d", written, streams, agent.StreamWindow)
	}
	if held > bound {
		t.Errorf("host heap grew by %d KiB, over the bound of %d KiB", held>>10, bound>>10)
	}

	// The budget: streams beyond MaxStreams are refused, clearly.
	for len(open) < agent.MaxStreams {
		s, err := c.Open(ctx, proto.Request{Op: proto.OpInfo})
		if err != nil {
			t.Fatalf("stream %d of %d: %v", len(open)+1, agent.MaxStreams, err)
		}
		open = append(open, s)
	}
	if _, err := c.Open(ctx, proto.Request{Op: proto.OpInfo}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("stream %d: %v, want ErrUnavailable", agent.MaxStreams+1, err)
	}

	// The host closes every stream; the guest never closes its ends.
	for _, s := range open {
		s.Close()
	}
	deadline := time.Now().Add(agent.StreamCloseTimeout + 10*time.Second)
	for c.NumStreams() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still held %s after the host closed them", c.NumStreams(), agent.StreamCloseTimeout+10*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	open = nil
	if after := int64(heapAlloc()) - int64(base); after > 4<<20 {
		t.Errorf("host heap still %d KiB over its start after the streams were dropped", after>>10)
	}
	if _, err := c.Open(ctx, proto.Request{Op: proto.OpInfo}); err != nil {
		t.Errorf("after the streams were dropped: %v", err)
	}
}

// TestHostileGuestSessions: what a guest says of its sessions is
// checked (ids, counts, exit codes, frame types) before the host uses it.
func TestHostileGuestSessions(t *testing.T) {
	id := "0123456789ab"
	info := func(id string) proto.SessionInfo {
		return proto.SessionInfo{ID: id, Argv: []string{"sh"}}
	}
	many := make([]proto.SessionInfo, proto.MaxSessions+1)
	for i := range many {
		many[i] = info(fmt.Sprintf("%012x", i))
	}
	resp := func(ss ...proto.SessionInfo) []byte {
		var b bytes.Buffer
		proto.WriteJSON(&b, proto.TResponse, proto.Response{Sessions: ss})
		return b.Bytes()
	}
	frame := func(t byte, p string) []byte {
		var b bytes.Buffer
		proto.WriteFrame(&b, t, []byte(p))
		return b.Bytes()
	}
	join := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	list := func(c *agent.Client) error { _, err := c.Sessions(context.Background()); return err }
	attachOut := func(c *agent.Client) error {
		s, err := c.AttachSession(context.Background(), id)
		if err != nil {
			return err
		}
		defer s.Close()
		_, err = s.Output(nil, nil)
		return err
	}
	for _, tc := range []struct {
		name  string
		guest []byte
		call  func(*agent.Client) error
	}{
		{"id with a path", resp(info("../../etc/pa")), list},
		{"id too long", resp(info(id + "0")), list},
		{"too many", resp(many...), list},
		{"twice", resp(info(id), info(id)), list},
		{"no command", resp(proto.SessionInfo{ID: id}), list},
		{"exit code", resp(proto.SessionInfo{ID: id, Argv: []string{"x"}, Exit: &proto.Exit{Code: 999}}), list},
		{"negative", resp(proto.SessionInfo{ID: id, Argv: []string{"x"}, OutputBytes: -1}), list},
		{"another session", resp(info("ba9876543210")), attachOut},
		{"two sessions", resp(info(id), info("ba9876543210")), attachOut},
		{"data frame", join(resp(info(id)), frame(proto.TData, "x")), attachOut},
		{"bad exit", join(resp(info(id)), frame(proto.TStdout, "x"), frame(proto.TExit, `{"code":-1}`)), attachOut},
		{"exit not json", join(resp(info(id)), frame(proto.TExit, `{`)), attachOut},
		{"cut frame", join(resp(info(id)), frame(proto.TStdout, "xyz")[:6]), attachOut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, guest := hostileGuest(t)
			sess := guestSession(t, guest)
			go func() {
				s, err := sess.AcceptStream()
				if err != nil {
					return
				}
				proto.ReadFrame(s, proto.MaxFrame)
				s.Write(tc.guest)
				s.Close()
			}()
			errc := make(chan error, 1)
			go func() { errc <- tc.call(c) }()
			select {
			case err := <-errc:
				if err == nil || errors.Is(err, agent.ErrDetached) {
					t.Errorf("accepted: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the host hung")
			}
		})
	}
}
