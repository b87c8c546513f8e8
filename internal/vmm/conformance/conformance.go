// Package conformance is the suite every vmm.Driver must pass, run against
// real instances of each backend.
package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// Fixture supplies a driver and fresh specs (each with its own folder and
// writable disk made from the test image).
type Fixture struct {
	Driver  vmm.Driver
	NewSpec func(t *testing.T, name string) vmm.Spec
}

// Run runs the suite.
func Run(t *testing.T, f Fixture) {
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, f) })
	t.Run("Exec", func(t *testing.T) { testExec(t, f) })
	t.Run("AdoptAfterClose", func(t *testing.T) { testAdopt(t, f) })
	t.Run("Freeze", func(t *testing.T) { testFreeze(t, f) })
	t.Run("SaveRestore", func(t *testing.T) { testSaveRestore(t, f) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, f) })
}

func start(t *testing.T, f Fixture, spec vmm.Spec) vmm.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	return inst
}

func run(t *testing.T, ag *agent.Client, stdin []byte, argv ...string) (string, string, proto.Exit) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	sio := agent.ExecIO{Stdout: &out, Stderr: &errb}
	if stdin != nil {
		sio.Stdin = bytes.NewReader(stdin)
	}
	exit, err := ag.Exec(ctx, proto.ExecRequest{Argv: argv}, sio)
	if err != nil {
		t.Fatalf("exec %q: %v", argv, err)
	}
	return out.String(), errb.String(), exit
}

// testLifecycle: boot, identity, files persist across Stop/Start, Done.
func testLifecycle(t *testing.T, f Fixture) {
	spec := f.NewSpec(t, "conf-life")
	inst := start(t, f, spec)
	info := inst.Info()
	if info.Backend != f.Driver.Name() || info.Accel == "" || info.Pid <= 0 {
		t.Fatalf("Info() = %+v", info)
	}
	ctx := context.Background()
	gi, err := inst.Agent().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gi.Hostname != spec.Name || gi.Kernel == "" || gi.MemTotal == 0 {
		t.Fatalf("guest info = %+v, want hostname %q", gi, spec.Name)
	}
	out, _, exit := run(t, inst.Agent(), nil, "sh", "-c", "echo persisted > $HOME/mark && sync && cat $HOME/mark")
	if exit.Code != 0 || out != "persisted\n" {
		t.Fatalf("write mark: %q %+v", out, exit)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-inst.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := f.Driver.Adopt(ctx, spec); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Adopt of a stopped instance: %v, want ErrNotRunning", err)
	}
	inst2 := start(t, f, spec)
	out, _, exit = run(t, inst2.Agent(), nil, "sh", "-c", "cat $HOME/mark")
	if exit.Code != 0 || out != "persisted\n" {
		t.Fatalf("after restart: %q %+v", out, exit)
	}
	if err := inst2.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst2.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done not closed after Kill")
	}
}

// testExec: exit codes, signals, stdin, large output, concurrency, files.
func testExec(t *testing.T, f Fixture) {
	inst := start(t, f, f.NewSpec(t, "conf-exec"))
	ag := inst.Agent()

	out, errOut, exit := run(t, ag, nil, "sh", "-c", "echo out; echo err >&2; exit 3")
	if out != "out\n" || errOut != "err\n" || exit.Code != 3 {
		t.Errorf("exit 3: out=%q err=%q exit=%+v", out, errOut, exit)
	}
	_, _, exit = run(t, ag, nil, "sh", "-c", "kill -9 $$")
	if exit.Code != 137 || exit.Signal != "SIGKILL" {
		t.Errorf("kill -9: %+v, want code 137 SIGKILL", exit)
	}
	_, _, exit = run(t, ag, nil, "no-such-command-wisp")
	if exit.Code != 127 || !strings.Contains(exit.Error, "not found") {
		t.Errorf("missing command: %+v, want 127 and a reason", exit)
	}
	in := make([]byte, 1<<20)
	rand.Read(in)
	out, _, exit = run(t, ag, in, "cat")
	if exit.Code != 0 || out != string(in) {
		t.Errorf("stdin round trip: %d bytes back, exit %+v", len(out), exit)
	}
	// 10 MB of output, intact.
	out, _, exit = run(t, ag, nil, "sh", "-c", "head -c 10000000 /dev/urandom > /tmp/big && sha256sum /tmp/big")
	if exit.Code != 0 {
		t.Fatalf("make big: %+v", exit)
	}
	want := strings.Fields(out)[0]
	out, _, exit = run(t, ag, nil, "cat", "/tmp/big")
	if got := fmt.Sprintf("%x", sha256.Sum256([]byte(out))); exit.Code != 0 || got != want || len(out) != 10000000 {
		t.Errorf("10 MB output: %d bytes, sha %s, want %s", len(out), got, want)
	}
	// Output written after the process exits, by a child that keeps stdout
	// open, still arrives while it keeps coming; a child that holds stdout
	// but stays quiet does not hold the exec until it ends.
	begin := time.Now()
	out, _, exit = run(t, ag, nil, "sh", "-c", "(for i in 1 2 3; do sleep 0.1; echo late$i; done; sleep 300) & echo now")
	if exit.Code != 0 || out != "now\nlate1\nlate2\nlate3\n" {
		t.Errorf("output after exit: %q %+v", out, exit)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("a quiet background child held the exec for %s", took)
	}
	// Concurrent execs share the channel.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b bytes.Buffer
			e, err := ag.Exec(context.Background(), proto.ExecRequest{Argv: []string{"sh", "-c", fmt.Sprintf("echo %d", i)}}, agent.ExecIO{Stdout: &b})
			if err != nil || e.Code != 0 || b.String() != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("concurrent exec %d: %q %+v %v", i, b.String(), e, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A PTY: the process sees a terminal of the requested size.
	var b bytes.Buffer
	e, err := ag.Exec(context.Background(), proto.ExecRequest{Argv: []string{"sh", "-c", "stty size; tty"}, TTY: true, Rows: 33, Cols: 101}, agent.ExecIO{Stdout: &b})
	if err != nil || e.Code != 0 || !strings.Contains(b.String(), "33 101") || !strings.Contains(b.String(), "/dev/pts/") {
		t.Errorf("pty: %q %+v %v", b.String(), e, err)
	}
	// Files: stat of a missing path is a not-found error.
	if _, err := ag.Stat(context.Background(), "/no/such/file"); err == nil {
		t.Error("stat of a missing file succeeded")
	} else if ge := (*agent.GuestError)(nil); !errors.As(err, &ge) || ge.Kind != proto.KindNotFound {
		t.Errorf("stat missing: %v, want kind not_found", err)
	}
}

// testAdopt: a daemon that lets go of an instance (Close) can adopt it again.
func testAdopt(t *testing.T, f Fixture) {
	spec := f.NewSpec(t, "conf-adopt")
	inst := start(t, f, spec)
	run(t, inst.Agent(), nil, "sh", "-c", "echo before > /tmp/adopt")
	if err := inst.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // twice: the guest must accept a new host more than once
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		again, err := f.Driver.Adopt(ctx, spec)
		cancel()
		if err != nil {
			t.Fatalf("Adopt: %v", err)
		}
		if again.Info().Pid != inst.Info().Pid {
			t.Fatalf("adopted pid %d, started %d", again.Info().Pid, inst.Info().Pid)
		}
		out, _, exit := run(t, again.Agent(), nil, "cat", "/tmp/adopt")
		if exit.Code != 0 || out != "before\n" {
			t.Fatalf("after adopt: %q %+v", out, exit)
		}
		again.Close()
	}

	// Reap ends an instance nobody holds, without its agent, and a new
	// instance can use the disk afterwards. Reap of nothing succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.Driver.Reap(ctx, spec); err != nil {
		t.Fatalf("Reap: %v", err)
	}
	select {
	case <-inst.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the instance still runs after Reap")
	}
	if _, err := f.Driver.Adopt(ctx, spec); !errors.Is(err, vmm.ErrNotRunning) {
		t.Fatalf("Adopt after Reap: %v, want ErrNotRunning", err)
	}
	if err := f.Driver.Reap(ctx, spec); err != nil {
		t.Fatalf("Reap of nothing: %v", err)
	}
	inst2 := start(t, f, spec)
	if out, _, exit := run(t, inst2.Agent(), nil, "cat", "/etc/hostname"); exit.Code != 0 || out == "" {
		t.Fatalf("start after Reap: %q %+v", out, exit)
	}
	inst2.Kill()
	<-inst2.Done()
}

// testFreeze: between Freeze and thaw the disk file holds what the guest
// wrote (without syncing), and the guest runs on afterwards.
func testFreeze(t *testing.T, f Fixture) {
	fr, ok := f.Driver.(vmm.Freezer)
	if !ok {
		t.Skip("optional capability: backend does not implement vmm.Freezer")
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs (e2fsprogs) not installed")
	}
	spec := f.NewSpec(t, "conf-freeze")
	inst := start(t, f, spec)
	run(t, inst.Agent(), nil, "sh", "-c", "echo frozen-ok > /tmp/fz")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	thaw, err := fr.Freeze(ctx, inst)
	if err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	cp := filepath.Join(t.TempDir(), "copy.img")
	out, cpErr := exec.Command("cp", "--sparse=always", spec.Disk, cp).CombinedOutput()
	if err := thaw(); err != nil {
		t.Fatalf("thaw: %v", err)
	}
	if cpErr != nil {
		t.Fatalf("copy disk: %v %s", cpErr, out)
	}
	got, err := exec.Command("debugfs", "-R", "cat /tmp/fz", cp).Output()
	if err != nil || string(got) != "frozen-ok\n" {
		t.Errorf("frozen disk copy has /tmp/fz = %q (%v), want frozen-ok", got, err)
	}
	if out, _, exit := run(t, inst.Agent(), nil, "sh", "-c", "echo after > /tmp/fz2 && cat /tmp/fz2"); exit.Code != 0 || out != "after\n" {
		t.Errorf("after thaw: %q %+v", out, exit)
	}
}

// testSaveRestore: a counting process survives Save/Restore (sleep/wake)
// and keeps counting from where it was; Save with keep leaves it running.
func testSaveRestore(t *testing.T, f Fixture) {
	sv, ok := f.Driver.(vmm.Saver)
	if !ok {
		t.Skip("optional capability: backend does not implement vmm.Saver")
	}
	spec := f.NewSpec(t, "conf-save")
	inst := start(t, f, spec)
	// The counter replaces its file by rename: a read never sees it half
	// written. It starts at 0 before the exec returns.
	counter := "echo 0 > /tmp/count; setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done' </dev/null >/dev/null 2>&1 &"
	run(t, inst.Agent(), nil, "sh", "-c", counter)
	read := func(ag *agent.Client) int {
		t.Helper()
		out, errOut, exit := run(t, ag, nil, "cat", "/tmp/count")
		var n int
		if _, err := fmt.Sscan(out, &n); err != nil || exit.Code != 0 {
			t.Fatalf("read the counter: %q %q %+v", out, errOut, exit)
		}
		return n
	}
	waitAbove := func(ag *agent.Client, n int) int {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if v := read(ag); v > n {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("counter stuck at or below %d", n)
			}
			time.Sleep(20 * time.Millisecond) // the counter ticks every 50 ms
		}
	}
	before := waitAbove(inst.Agent(), 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Save with keep: the instance keeps running; during runs while paused.
	state := filepath.Join(t.TempDir(), "snap")
	called := false
	if err := sv.Save(ctx, inst, state, true, func() error { called = true; return nil }); err != nil {
		t.Fatalf("Save(keep): %v", err)
	}
	if !called {
		t.Error("Save did not call during")
	}
	before = waitAbove(inst.Agent(), before)

	// Save without keep: the process ends; Restore brings the counter back.
	sleep := vmm.SleepDir(spec)
	if err := sv.Save(ctx, inst, sleep, false, nil); err != nil {
		t.Fatalf("Save: %v", err)
	}
	select {
	case <-inst.Done():
	default:
		t.Fatal("Save without keep left the instance running")
	}
	woke, err := sv.Restore(ctx, spec, sleep)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() { woke.Kill(); <-woke.Done() })
	// Not rolled back, and still running: nobody restarts the counter, so
	// it counts only if its process came back with the memory.
	after := read(woke.Agent())
	if after < before {
		t.Errorf("counter was %d before sleep, %d after wake: not resumed where it was", before, after)
	}
	waitAbove(woke.Agent(), after)
}

// testSessions: an exec session outlives its stream and its host (Close
// and Adopt: a daemon restart) and a sleep/wake (Save and Restore, where
// the backend can); what it printed meanwhile is replayed on attach (stdout
// and stderr apart), then its exit. A session with no run after
// disconnect ends with the host that held it.
func testSessions(t *testing.T, f Fixture) {
	spec := f.NewSpec(t, "conf-sess")
	inst := start(t, f, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	script := "echo one; while [ ! -e /tmp/go1 ]; do sleep 0.05; done; echo two; " +
		"while [ ! -e /tmp/go2 ]; do sleep 0.05; done; echo three >&2; exit 7"
	s, err := inst.Agent().StartSession(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", script}}, proto.SessionRequest{})
	if err != nil {
		t.Fatalf("StartSession: %v", err)
	}
	zero := time.Duration(0)
	z, err := inst.Agent().StartSession(ctx, proto.ExecRequest{Argv: []string{"sleep", "1000"}}, proto.SessionRequest{MaxRunAfterDisconnect: &zero})
	if err != nil {
		t.Fatalf("StartSession: %v", err)
	}
	go s.Output(nil, nil)
	go z.Output(nil, nil)
	// The host goes with both attached, and comes back.
	if err := inst.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := f.Driver.Adopt(ctx, spec)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	cur := again
	t.Cleanup(func() { cur.Kill(); <-cur.Done() })
	list := func(id string) proto.SessionInfo {
		t.Helper()
		all, err := cur.Agent().Sessions(ctx)
		if err != nil {
			t.Fatalf("Sessions: %v", err)
		}
		for _, si := range all {
			if si.ID == id {
				return si
			}
		}
		t.Fatalf("session %s not listed in %+v", id, all)
		return proto.SessionInfo{}
	}
	waitSession := func(id, what string, cond func(proto.SessionInfo) bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for si := list(id); !cond(si); si = list(id) {
			if time.Now().After(deadline) {
				t.Fatalf("session %s: timed out waiting for %s: %+v", id, what, si)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitSession(z.Info.ID, "the end of the session that ends with its host", func(si proto.SessionInfo) bool { return si.Exit != nil })
	waitSession(s.Info.ID, "the host's going detaching it", func(si proto.SessionInfo) bool { return !si.Attached })
	run(t, cur.Agent(), nil, "touch", "/tmp/go1")
	waitSession(s.Info.ID, "output while detached", func(si proto.SessionInfo) bool { return si.OutputBytes == int64(len("one\ntwo\n")) })

	if sv, ok := f.Driver.(vmm.Saver); ok {
		sleep := vmm.SleepDir(spec)
		if err := sv.Save(ctx, cur, sleep, false, nil); err != nil {
			t.Fatalf("Save: %v", err)
		}
		woke, err := sv.Restore(ctx, spec, sleep)
		if err != nil {
			t.Fatalf("Restore: %v", err)
		}
		cur = woke
		if si := list(s.Info.ID); si.Exit != nil {
			t.Fatalf("the session ended in a sleep: %+v", si)
		}
	}
	run(t, cur.Agent(), nil, "touch", "/tmp/go2")
	a, err := cur.Agent().AttachSession(ctx, s.Info.ID)
	if err != nil {
		t.Fatalf("AttachSession: %v", err)
	}
	defer a.Close()
	var out, errb bytes.Buffer
	exit, err := a.Output(&out, &errb)
	if err != nil || exit.Code != 7 || out.String() != "one\ntwo\n" || errb.String() != "three\n" {
		t.Errorf("attach: stdout %q, stderr %q, exit %+v, %v", out.String(), errb.String(), exit, err)
	}

	// Limits: proto.MaxSessions running (the ended one gives its place),
	// then a refusal; a kill makes room.
	ag := cur.Agent()
	var ids []string
	for {
		s, err := ag.StartSession(ctx, proto.ExecRequest{Argv: []string{"sleep", "1000"}}, proto.SessionRequest{})
		if err != nil {
			if ge := (*agent.GuestError)(nil); !errors.As(err, &ge) || ge.Kind != proto.KindLimit {
				t.Fatalf("session %d: %v, want kind limit", len(ids)+1, err)
			}
			break
		}
		ids = append(ids, s.Info.ID)
		s.Close()
	}
	if len(ids) != proto.MaxSessions {
		t.Errorf("%d sessions ran before the limit, want %d", len(ids), proto.MaxSessions)
	}
	if err := ag.KillSession(ctx, ids[0], ""); err != nil {
		t.Fatalf("KillSession: %v", err)
	}
	s, err = ag.StartSession(ctx, proto.ExecRequest{Argv: []string{"true"}}, proto.SessionRequest{})
	if err != nil {
		t.Fatalf("after a kill: %v", err)
	}
	if e, err := s.Output(nil, nil); err != nil || e.Code != 0 {
		t.Errorf("after a kill: %+v %v", e, err)
	}
	var wg sync.WaitGroup
	for _, id := range ids[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ag.KillSession(ctx, id, ""); err != nil {
				t.Errorf("KillSession: %v", err)
			}
		}()
	}
	wg.Wait()
	if all, err := ag.Sessions(ctx); err != nil || len(all) != 0 {
		t.Errorf("after killing them all: %d sessions, %v", len(all), err)
	}
}
