package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/guest"
)

// reaper is the test process's one child reaper: each waits for any
// child, so a second one would take the exits the first waits for.
var reaper = sync.OnceValue(guest.NewReaper)

// serve runs a guest agent in this process that dials ln for each session,
// as the gVisor agent does; each accepted conn is one host session.
func serve(t testing.TB) net.Listener {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := &guest.Server{Log: slog.New(slog.DiscardHandler), Reaper: reaper()}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Serve(ctx, func() (io.ReadWriteCloser, error) { return net.Dial("unix", sock) })
	return ln
}

func connect(t testing.TB, ln net.Listener) *agent.Client {
	t.Helper()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := agent.Connect(ctx, conn, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExecAndFiles(t *testing.T) {
	ln := serve(t)
	c := connect(t, ln)
	defer c.Close()
	ctx := context.Background()

	var out bytes.Buffer
	exit, err := c.Exec(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", "cat; exit 4"}}, agent.ExecIO{Stdin: bytes.NewReader([]byte("piped")), Stdout: &out})
	if err != nil || exit.Code != 4 || out.String() != "piped" {
		t.Fatalf("exec: %q %+v %v", out.String(), exit, err)
	}
	exit, err = c.Exec(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", "kill -TERM $$"}}, agent.ExecIO{})
	if err != nil || exit.Code != 143 || exit.Signal != "SIGTERM" {
		t.Fatalf("signal: %+v %v", exit, err)
	}
	// Cancelling the context kills the process.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	exit, err = c.Exec(cctx, proto.ExecRequest{Argv: []string{"sleep", "30"}}, agent.ExecIO{})
	if err != nil || exit.Signal != "SIGKILL" {
		t.Fatalf("cancelled exec: %+v %v", exit, err)
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644)
	fi, err := c.Stat(ctx, filepath.Join(dir, "f"))
	if err != nil || fi.Size != 4 || fi.IsDir {
		t.Fatalf("stat: %+v %v", fi, err)
	}
	if err := c.Mkdir(ctx, filepath.Join(dir, "a/b"), 0o755, true); err != nil {
		t.Fatal(err)
	}
	files, _, err := c.List(ctx, dir)
	if err != nil || len(files) != 2 {
		t.Fatalf("list: %+v %v", files, err)
	}
	if err := c.Remove(ctx, filepath.Join(dir, "a"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, "relative/path"); err == nil {
		t.Error("relative path accepted")
	}
}

// TestNewHostSession: a host that goes away and comes back (daemon restart)
// gets a fresh session, even when the old one left bytes in flight.
func TestNewHostSession(t *testing.T) {
	ln := serve(t)
	c := connect(t, ln)
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c2 := connect(t, ln)
	defer c2.Close()
	info, err := c2.Info(context.Background())
	if err != nil || info.Kernel == "" {
		t.Fatalf("info after reconnect: %+v %v", info, err)
	}
}

// TestStats: one call describes the paths that exist, in order, and the
// entries of a folder named "folder/*"; missing ones are left out.
func TestStats(t *testing.T) {
	ln := serve(t)
	c := connect(t, ln)
	defer c.Close()
	dir := t.TempDir()
	for _, f := range []string{"a", "d/x", "d/y"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, truncated, err := c.Stats(context.Background(), []string{dir + "/a", dir + "/missing", dir + "/d/*", dir + "/nodir/*", dir + "/d/x"})
	if err != nil || truncated {
		t.Fatalf("stats: %v, truncated %v", err, truncated)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.Name)
	}
	want := []string{dir + "/a", dir + "/d/x", dir + "/d/y", dir + "/d/x"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if files[0].Size != 1 || files[1].Size != 3 {
		t.Errorf("sizes: %+v", files)
	}
	if _, _, err := c.Stats(context.Background(), []string{"relative"}); err == nil {
		t.Error("a relative path: no error")
	}
}

// TestSessionExpect: a start whose precondition holds runs; one whose
// files changed is refused with KindStale and starts nothing.
func TestSessionExpect(t *testing.T) {
	ln := serve(t)
	c := connect(t, ln)
	defer c.Close()
	ctx := context.Background()
	dir := t.TempDir()
	f := filepath.Join(dir, "profile")
	os.WriteFile(f, []byte("one"), 0o644)
	paths := []string{f, dir + "/missing"}
	files, _, err := c.Stats(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	expect := &proto.Expect{Paths: paths, Stamp: proto.StatsStamp(files)}
	marker := filepath.Join(dir, "ran")
	start := func() error {
		s, err := c.StartSession(ctx, proto.ExecRequest{Argv: []string{"touch", marker}}, proto.SessionRequest{Expect: expect})
		if err != nil {
			return err
		}
		defer s.Close()
		exit, err := s.Output(nil, nil)
		if err == nil && exit.Code != 0 {
			t.Fatalf("touch: %+v", exit)
		}
		return err
	}
	if err := start(); err != nil {
		t.Fatalf("start with files as expected: %v", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the command did not run")
	}
	os.Remove(marker)
	os.WriteFile(dir+"/missing", nil, 0o644) // a file appears
	var ge *agent.GuestError
	if err := start(); !errors.As(err, &ge) || ge.Kind != proto.KindStale {
		t.Fatalf("start after a file appeared: %v, want a %s error", err, proto.KindStale)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a refused start ran its command")
	}
}
