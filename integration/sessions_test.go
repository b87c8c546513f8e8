package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/client"
)

// TestSessions: wisp exec --detach prints a session id; the session runs
// on without a client, through a daemon kill -9 and a sleep/wake; wisp
// attach replays what it printed meanwhile (stdout and stderr apart),
// follows and exits with its code; wisp sessions kill ends one; --max-run
// ends one that long after its client went; a plain exec whose client
// dies ends with it.
func TestSessions(t *testing.T) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) { testSessions(t, b) })
	}
}

type sessionJSON struct {
	ID       string   `json:"id"`
	Command  []string `json:"command"`
	Attached bool     `json:"attached"`
	Running  bool     `json:"running"`
	ExitCode *int     `json:"exit_code"`
}

func (d *daemon) session(name, id string) (sessionJSON, bool) {
	d.t.Helper()
	var list []sessionJSON
	if err := json.Unmarshal([]byte(d.ok("sessions", name, "--json")), &list); err != nil {
		d.t.Fatal(err)
	}
	for _, s := range list {
		if s.ID == id {
			return s, true
		}
	}
	return sessionJSON{}, false
}

func testSessions(t *testing.T, backend string) {
	d := newDaemon(t, backend)
	d.ok("create", "s1", "--idle", "never")
	script := "echo one; echo err-one >&2; while [ ! -e /tmp/go1 ]; do sleep 0.05; done; echo two; " +
		"while [ ! -e /tmp/go2 ]; do sleep 0.05; done; echo three; exit 7"
	id := strings.TrimSpace(d.ok("exec", "s1", "--detach", "--", "sh", "-c", script))
	if len(id) != 12 {
		t.Fatalf("exec --detach printed %q, want a session id", id)
	}
	waitFor(t, time.Minute, "the detached session listed, running, no client", func() bool {
		s, ok := d.session("s1", id)
		return ok && s.Running && !s.Attached && strings.Join(s.Command, " ") == "sh -c "+script
	})
	if out := d.ok("sessions", "s1"); !strings.Contains(out, id) || !strings.Contains(out, "running") {
		t.Errorf("wisp sessions:\n%s", out)
	}

	// The daemon dies; the session does not.
	d.kill9AndRestart()
	d.ok("exec", "s1", "--", "touch", "/tmp/go1")
	if s, ok := d.session("s1", id); !ok || !s.Running {
		t.Fatalf("after kill -9 of wispd: %+v %v", s, ok)
	}
	// Nor does a sleep stop it.
	d.ok("sleep", "s1")
	if st := d.info("s1").State; st != "sleeping" {
		t.Fatalf("after sleep: %s", st)
	}
	d.ok("exec", "s1", "--", "touch", "/tmp/go2") // wakes it
	out, errOut, code := d.wisp(nil, "attach", "s1", id)
	if code != 7 || out != "one\ntwo\nthree\n" || !strings.Contains(errOut, "err-one\n") {
		t.Errorf("attach: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Forgotten once a client saw its end (shortly after: the client
	// returns at the exit frame, before the guest's half of the close).
	waitFor(t, 10*time.Second, "a session whose end a client saw to be forgotten", func() bool {
		_, ok := d.session("s1", id)
		return !ok
	})
	d.fails("no session", "attach", "s1", id)

	// Kill; and --max-run.
	id2 := strings.TrimSpace(d.ok("exec", "s1", "--detach", "--", "sleep", "1000"))
	id3 := strings.TrimSpace(d.ok("exec", "s1", "--detach", "--max-run", "1s", "--", "sleep", "1000"))
	d.ok("sessions", "kill", "s1", id2)
	if _, ok := d.session("s1", id2); ok {
		t.Error("a killed session is still listed")
	}
	waitFor(t, time.Minute, "the --max-run session ended", func() bool {
		s, ok := d.session("s1", id3)
		return ok && !s.Running && s.ExitCode != nil
	})
	d.fails("no session", "sessions", "kill", "s1", "0123456789ab")

	// A running session keeps its sprite awake; once it ends, the sprite
	// sleeps.
	id4 := strings.TrimSpace(d.ok("exec", "s1", "--detach", "--", "sleep", "1000"))
	d.ok("set", "s1", "idle=2s")
	until := time.Now().Add(6 * time.Second) // three idle times
	waitFor(t, time.Minute, "three idle times", func() bool { return time.Now().After(until) })
	if st := d.info("s1").State; st != "running" {
		t.Fatalf("a sprite with a running session is %s after three idle times", st)
	}
	d.ok("sessions", "kill", "s1", id4)
	waitState(t, d, "s1", "sleeping", time.Minute)
	d.ok("set", "s1", "idle=never")

	// A plain exec ends when its client dies.
	cli := exec.Command(filepath.Join(binDir, "wisp"), "exec", "s1", "--", "sh", "-c", "echo $$ > /tmp/plain; exec sleep 1000")
	cli.Env = append(os.Environ(), "WISP_SOCKET="+d.sock)
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the plain exec running", func() bool {
		_, _, code := d.wisp(nil, "exec", "s1", "--", "test", "-s", "/tmp/plain")
		return code == 0
	})
	cli.Process.Signal(syscall.SIGKILL)
	cli.Wait()
	waitFor(t, time.Minute, "the plain exec's command ended with its client", func() bool {
		_, _, code := d.wisp(nil, "exec", "s1", "--", "sh", "-c", "kill -0 $(cat /tmp/plain)")
		return code != 0
	})
}

// TestSessionsSDK: through the Go SDK, a detachable command's stdin
// reaches it across a detach and an attach, and an attach takes the
// session from the client that had it (ErrDetached there).
func TestSessionsSDK(t *testing.T) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) { testSessionsSDK(t, b) })
	}
}

func testSessionsSDK(t *testing.T, backend string) {
	d := newDaemon(t, backend)
	d.ok("create", "s2", "--idle", "never")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sp := client.New(client.WithSocket(d.sock)).Sprite("s2")

	// Started with stdin; the first client sends a line and detaches.
	first := sp.CommandContext(ctx, "sh", "-c", "read a; echo got-$a; read b; echo got-$b; exit 5")
	first.Detachable = true
	in, err := first.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out1 bytes.Buffer
	pr, pw := io.Pipe()
	first.Stdout = pw
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(in, "one\n")
	line := make([]byte, len("got-one\n"))
	if _, err := io.ReadFull(pr, line); err != nil || string(line) != "got-one\n" {
		t.Fatalf("first client: %q %v", line, err)
	}
	go io.Copy(&out1, pr)
	id := first.SessionID()

	// A second client takes it over; the first is told.
	second := sp.Attach(ctx, id)
	in2, err := second.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out2 bytes.Buffer
	second.Stdout = &out2
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(); !errors.Is(err, client.ErrDetached) {
		t.Errorf("the client taken over: %v, want ErrDetached", err)
	}
	io.WriteString(in2, "two\n")
	err = second.Wait()
	var ee *client.ExitError
	if !errors.As(err, &ee) || ee.Code != 5 || out2.String() != "got-one\ngot-two\n" {
		t.Errorf("second client: %v, output %q", err, out2.String())
	}
	// The guest forgets a session once a client took its exit; the client
	// returns at the exit frame, before the guest's half of the close, so
	// the forgetting follows shortly.
	waitFor(t, 10*time.Second, "the ended session to be forgotten", func() bool {
		list, err := sp.Sessions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.ID == id {
				return false
			}
		}
		return true
	})
}
