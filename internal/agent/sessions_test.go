package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
)

func dur(d time.Duration) *time.Duration { return &d }

// waitFor polls cond until it holds, for up to limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", limit, what)
		}
	}
}

// session returns what the guest lists of session id (ok false: it is
// not listed).
func session(t *testing.T, c *agent.Client, id string) (proto.SessionInfo, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all, err := c.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if s.ID == id {
			return s, true
		}
	}
	return proto.SessionInfo{}, false
}

func start(t *testing.T, c *agent.Client, req proto.ExecRequest, opt proto.SessionRequest) *agent.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.StartSession(ctx, req, opt)
	if err != nil {
		t.Fatalf("start %q: %v", req.Argv, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func attach(t *testing.T, c *agent.Client, id string) *agent.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.AttachSession(ctx, id)
	if err != nil {
		t.Fatalf("attach %s: %v", id, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// lineWriter signals each time what was written so far contains want.
type untilWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func until(want string) *untilWriter { return &untilWriter{want: want, seen: make(chan struct{})} }

func (w *untilWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *untilWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *untilWriter) wait(t *testing.T) {
	t.Helper()
	select {
	case <-w.seen:
	case <-time.After(30 * time.Second):
		t.Fatalf("never saw %q; got %q", w.want, w.String())
	}
}

// TestSessionDetachAttach: a session runs on when its stream goes; what
// it printed before and while detached (stdout and stderr apart) is
// replayed on attach, then it follows live, takes stdin, and its exit
// comes last; a session whose exit was taken is forgotten.
func TestSessionDetachAttach(t *testing.T) {
	c := connect(t, serve(t))
	defer c.Close()
	flag := filepath.Join(t.TempDir(), "go-on")
	s := start(t, c, proto.ExecRequest{Argv: []string{"sh", "-c",
		"echo early; echo early-err >&2; while [ ! -e " + flag + " ]; do sleep 0.02; done; echo while-detached; read x; echo got-$x; exit 3"}},
		proto.SessionRequest{Stdin: true})
	id := s.Info.ID
	if !proto.ValidSessionID(id) || s.Info.Exit != nil || !s.Info.Stdin || s.Info.MaxRunAfterDisconnect != nil {
		t.Fatalf("started: %+v", s.Info)
	}
	out := until("early\n")
	done := make(chan error, 1)
	go func() { _, err := s.Output(out, nil); done <- err }()
	out.wait(t)
	s.Close()
	if err := <-done; !errors.Is(err, agent.ErrDetached) {
		t.Fatalf("Output after Close: %v, want ErrDetached", err)
	}
	waitFor(t, 10*time.Second, "the session listed as detached", func() bool {
		info, ok := session(t, c, id)
		return ok && !info.Attached
	})
	// Output while detached.
	os.WriteFile(flag, nil, 0o644)
	waitFor(t, 10*time.Second, "the output printed while detached", func() bool {
		info, _ := session(t, c, id)
		return info.OutputBytes == int64(len("early\nearly-err\nwhile-detached\n"))
	})
	if info, _ := session(t, c, id); info.Exit != nil {
		t.Fatalf("the session ended while detached: %+v", info)
	}

	a := attach(t, c, id)
	if a.Info.ID != id || !a.Info.Attached {
		t.Errorf("attached: %+v", a.Info)
	}
	stdout, stderr := until("got-hi\n"), until("early-err\n")
	exitc := make(chan proto.Exit, 1)
	go func() {
		e, err := a.Output(stdout, stderr)
		if err != nil {
			t.Error(err)
		}
		exitc <- e
	}()
	// Stdin goes to the process once the replay is through.
	waitFor(t, 10*time.Second, "the replay", func() bool { return strings.Contains(stdout.String(), "while-detached") })
	a.Write([]byte("hi\n"))
	stdout.wait(t)
	e := <-exitc
	if e.Code != 3 || stdout.String() != "early\nwhile-detached\ngot-hi\n" || stderr.String() != "early-err\n" {
		t.Errorf("attach: exit %+v, stdout %q, stderr %q", e, stdout.String(), stderr.String())
	}
	waitFor(t, 10*time.Second, "the ended session forgotten once its exit was taken", func() bool {
		_, ok := session(t, c, id)
		return !ok
	})
	ctx := context.Background()
	if _, err := c.AttachSession(ctx, id); !isKind(err, proto.KindNotFound) {
		t.Errorf("attach to a forgotten session: %v, want not found", err)
	}
	if _, err := c.AttachSession(ctx, "../etc"); !isKind(err, proto.KindNotFound) {
		t.Errorf("attach to a bad id: %v, want not found", err)
	}
}

func isKind(err error, kind string) bool {
	var ge *agent.GuestError
	return errors.As(err, &ge) && ge.Kind == kind
}

// TestSessionMaxRun: with max run 0 a session ends with its stream; with
// a max run, that long after; without, it runs on.
func TestSessionMaxRun(t *testing.T) {
	c := connect(t, serve(t))
	defer c.Close()
	zero := start(t, c, proto.ExecRequest{Argv: []string{"sleep", "1000"}}, proto.SessionRequest{MaxRunAfterDisconnect: dur(0)})
	short := start(t, c, proto.ExecRequest{Argv: []string{"sleep", "1000"}}, proto.SessionRequest{MaxRunAfterDisconnect: dur(300 * time.Millisecond)})
	forever := start(t, c, proto.ExecRequest{Argv: []string{"sleep", "1000"}}, proto.SessionRequest{})
	for _, s := range []*agent.Session{zero, short, forever} {
		s.Close()
	}
	for _, s := range []*agent.Session{zero, short} {
		waitFor(t, 20*time.Second, "session "+s.Info.ID+" ended after its max run", func() bool {
			info, _ := session(t, c, s.Info.ID)
			return info.Exit != nil
		})
		if info, _ := session(t, c, s.Info.ID); info.Exit.Code != 129 && info.Exit.Code != 137 {
			t.Errorf("ended by its max run: %+v, want a hangup or kill", info.Exit)
		}
	}
	if info, ok := session(t, c, forever.Info.ID); !ok || info.Exit != nil {
		t.Errorf("a session without a max run: %+v %v, want it running", info, ok)
	}
	// An attach before the max run ends stops the clock.
	s := start(t, c, proto.ExecRequest{Argv: []string{"sleep", "1000"}}, proto.SessionRequest{MaxRunAfterDisconnect: dur(2 * time.Second)})
	s.Close()
	a := attach(t, c, s.Info.ID)
	t0 := time.Now()
	waitFor(t, 10*time.Second, "past the max run", func() bool { return time.Since(t0) > 3*time.Second })
	if info, _ := session(t, c, s.Info.ID); info.Exit != nil || !info.Attached {
		t.Errorf("attached session ended by the max run of an earlier detach: %+v", info)
	}
	a.Close()
	if err := c.KillSession(context.Background(), forever.Info.ID, ""); err != nil {
		t.Fatal(err)
	}
}

// TestSessionTakeover: an attach takes the session from the stream that
// had it, which is told (ErrDetached); kill ends it for the new one.
func TestSessionTakeover(t *testing.T) {
	c := connect(t, serve(t))
	defer c.Close()
	first := start(t, c, proto.ExecRequest{Argv: []string{"sh", "-c", "echo hello; exec sleep 1000"}}, proto.SessionRequest{})
	done := make(chan error, 1)
	go func() { _, err := first.Output(nil, nil); done <- err }()
	second := attach(t, c, first.Info.ID)
	select {
	case err := <-done:
		if !errors.Is(err, agent.ErrDetached) {
			t.Errorf("the stream taken over: %v, want ErrDetached", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream taken over was not told")
	}
	out := until("hello\n")
	exitc := make(chan proto.Exit, 1)
	go func() { e, _ := second.Output(out, nil); exitc <- e }()
	out.wait(t)
	if err := c.KillSession(context.Background(), first.Info.ID, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exitc:
		if e.Code != 143 || e.Signal != "SIGTERM" {
			t.Errorf("killed: %+v, want TERM", e)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after kill")
	}
	if _, ok := session(t, c, first.Info.ID); ok {
		t.Error("a killed session is still listed")
	}
	if err := c.KillSession(context.Background(), first.Info.ID, ""); !isKind(err, proto.KindNotFound) {
		t.Errorf("kill of a forgotten session: %v", err)
	}
}

// TestSessionOutputBounds: an attached stream gets every byte (the
// process waits for it); a detached session keeps only the newest
// proto.SessionKeep bytes, which an attach replays.
func TestSessionOutputBounds(t *testing.T) {
	c := connect(t, serve(t))
	defer c.Close()
	var want bytes.Buffer
	for i := 1; i <= 600000; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	s := start(t, c, proto.ExecRequest{Argv: []string{"seq", "600000"}}, proto.SessionRequest{})
	var got bytes.Buffer
	e, err := s.Output(&got, nil)
	if err != nil || e.Code != 0 || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("attached: %d bytes of %d, equal %v, exit %+v %v", got.Len(), want.Len(), bytes.Equal(got.Bytes(), want.Bytes()), e, err)
	}

	d := start(t, c, proto.ExecRequest{Argv: []string{"seq", "600000"}}, proto.SessionRequest{})
	d.Close()
	waitFor(t, 30*time.Second, "the detached session ended", func() bool {
		info, _ := session(t, c, d.Info.ID)
		return info.Exit != nil
	})
	if info, _ := session(t, c, d.Info.ID); info.OutputBytes != int64(want.Len()) {
		t.Errorf("output bytes %d, want %d", info.OutputBytes, want.Len())
	}
	got.Reset()
	e, err = attach(t, c, d.Info.ID).Output(&got, nil)
	if err != nil || e.Code != 0 {
		t.Fatalf("replay: %+v %v", e, err)
	}
	if got.Len() > proto.SessionKeep || got.Len() < proto.SessionKeep/2 || !bytes.HasSuffix(want.Bytes(), got.Bytes()) {
		t.Errorf("replay of %d bytes (keep %d), a suffix of the output: %v", got.Len(), proto.SessionKeep, bytes.HasSuffix(want.Bytes(), got.Bytes()))
	}
}

// TestSessionLimits: at most proto.MaxSessions; an ended one gives its
// place; a command that cannot start is a session that has ended.
func TestSessionLimits(t *testing.T) {
	c := connect(t, serve(t))
	defer c.Close()
	ctx := context.Background()
	bad := start(t, c, proto.ExecRequest{Argv: []string{"no-such-command-wisp"}}, proto.SessionRequest{})
	if e, err := bad.Output(nil, nil); err != nil || e.Code != 127 || e.Error == "" {
		t.Errorf("missing command: %+v %v", e, err)
	}
	var ids []string
	for range proto.MaxSessions {
		s := start(t, c, proto.ExecRequest{Argv: []string{"sleep", "1000"}}, proto.SessionRequest{})
		ids = append(ids, s.Info.ID)
		s.Close()
	}
	if _, err := c.StartSession(ctx, proto.ExecRequest{Argv: []string{"true"}}, proto.SessionRequest{}); !isKind(err, proto.KindLimit) {
		t.Fatalf("session %d: %v, want kind limit", proto.MaxSessions+1, err)
	}
	// One ends (a signal: it stays listed, ended), and gives its place.
	if err := c.KillSession(ctx, ids[0], "KILL"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the killed session ended", func() bool {
		info, _ := session(t, c, ids[0])
		return info.Exit != nil && info.Exit.Signal == "SIGKILL"
	})
	if err := c.KillSession(ctx, ids[1], "NOSUCH"); !isKind(err, proto.KindInvalid) {
		t.Errorf("unknown signal: %v", err)
	}
	s := start(t, c, proto.ExecRequest{Argv: []string{"true"}}, proto.SessionRequest{})
	if e, err := s.Output(nil, nil); err != nil || e.Code != 0 {
		t.Errorf("in the place of an ended session: %+v %v", e, err)
	}
	if _, ok := session(t, c, ids[0]); ok {
		t.Error("the ended session still listed after giving its place")
	}
	for _, id := range ids[1:] {
		if err := c.KillSession(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if all, err := c.Sessions(ctx); err != nil || len(all) != 0 {
		t.Errorf("after killing them all: %d listed, %v", len(all), err)
	}
}

// TestSessionTTY: a terminal session takes a size and a resize.
func TestSessionTTY(t *testing.T) {
	c := connect(t, serve(t))
	defer c.Close()
	s := start(t, c, proto.ExecRequest{Argv: []string{"sh", "-c", "stty size; read x; stty size"}, TTY: true, Rows: 33, Cols: 101}, proto.SessionRequest{})
	out := until("33 101")
	exitc := make(chan proto.Exit, 1)
	go func() { e, _ := s.Output(out, nil); exitc <- e }()
	out.wait(t)
	s.Resize(40, 120)
	s.Write([]byte("\n"))
	select {
	case e := <-exitc:
		if e.Code != 0 || !strings.Contains(out.String(), "40 120") {
			t.Errorf("tty: %q %+v", out.String(), e)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("tty session did not end: %q", out.String())
	}
}

// TestSessionsConcurrent: starts, lists, takeovers and kills at once
// (run with -race): every session still ends with its own output and
// exit, or is told it was taken over.
func TestSessionsConcurrent(t *testing.T) {
	c := connect(t, serve(t))
	defer c.Close()
	ctx := context.Background()
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { // a meddler: lists, attaches to what it sees, detaches
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			all, err := c.Sessions(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			for _, s := range all {
				if a, err := c.AttachSession(ctx, s.ID); err == nil {
					a.Close()
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.StartSession(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", fmt.Sprintf("for j in 1 2 3; do echo %d-$j; done; exit %d", i, i)}}, proto.SessionRequest{})
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			for {
				var out bytes.Buffer
				e, err := s.Output(&out, nil)
				if errors.Is(err, agent.ErrDetached) {
					// Taken over: attach again (the meddler lets go).
					if s, err = c.AttachSession(ctx, s.Info.ID); err != nil {
						if isKind(err, proto.KindNotFound) {
							return // the meddler took its exit
						}
						t.Error(err)
						return
					}
					continue
				}
				if err != nil || e.Code != i || !strings.HasSuffix(out.String(), fmt.Sprintf("%d-3\n", i)) {
					t.Errorf("session %d: %q %+v %v", i, out.String(), e, err)
				}
				return
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
}
