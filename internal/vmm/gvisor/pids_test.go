package gvisor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// cgroupFile returns a file of the sandbox's pids cgroup (v1 or v2).
func cgroupFile(id, name string) string {
	dir := filepath.Join("/sys/fs/cgroup/pids/wisp", id)
	if _, err := os.Stat(dir); err != nil {
		dir = filepath.Join("/sys/fs/cgroup/wisp", id)
	}
	return filepath.Join(dir, name)
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// TestForkBomb: in a sprite limited to 64 processes, a burst of processes
// meets EAGAIN inside while its agent answers; a fork bomb started by a
// root who left the guest's limit meets the sandbox's host limit.
// Meanwhile the host starts processes and another sprite answers an exec
// within 1 s.
func TestForkBomb(t *testing.T) {
	f := fixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	other, err := f.Driver.Start(ctx, f.NewSpec(t, "other"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Kill(); <-other.Done() })

	spec := f.NewSpec(t, "bomb")
	spec.Pids = 64
	spec.MemoryMiB = 1024 // the bomb meets its process limit before its memory
	inst, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	id := containerID(spec)
	// The host limit must be in force before anything forks.
	max, err := readInt(cgroupFile(id, "pids.max"))
	if err != nil || int64(max) != hostPids(64) {
		t.Fatalf("sandbox pids.max = %d (%v), want %d", max, err, hostPids(64))
	}
	idle, _ := readInt(cgroupFile(id, "pids.current"))
	t.Logf("idle sandbox: %d host tasks, limit %d", idle, max)

	run := func(script string) (string, proto.Exit, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var out strings.Builder
		exit, err := inst.Agent().Exec(ctx, proto.ExecRequest{Argv: []string{"sh", "-c", script}, User: "root"}, agent.ExecIO{Stdout: &out, Stderr: &out})
		return out.String(), exit, err
	}

	// A burst: 100 sleepers, of which the limit lets 64 tasks live.
	out, exit, err := run("for i in $(seq 100); do sleep 5 & done; wait")
	if err != nil || !strings.Contains(out, "Resource temporarily unavailable") {
		t.Fatalf("burst: %q %+v %v, want fork to fail with EAGAIN", out, exit, err)
	}
	// At the limit the agent answers: the command's output, or a clear
	// EAGAIN when it cannot fork it.
	out, exit, err = run("echo alive")
	if err != nil || out != "alive\n" && !strings.Contains(exit.Error, "resource temporarily unavailable") {
		t.Fatalf("agent of a sprite at its limit: %q %+v %v", out, exit, err)
	}
	// Once the sleepers end (5 s), the sprite is whole again.
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, _, err := run("cat /run/wisp/pids/sprite/pids.current")
		if n, cerr := strconv.Atoi(strings.TrimSpace(out)); err == nil && cerr == nil && n < 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sprite did not recover from the burst in 30 s: %q %v", out, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The bomb. Its sandbox's host tasks are sampled until it ends.
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			n, err := readInt(cgroupFile(id, "pids.current"))
			if err != nil {
				return // the sandbox is gone
			}
			if int64(n) > peak.Load() {
				peak.Store(int64(n))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	bombCtx, stopBomb := context.WithCancel(ctx)
	defer stopBomb()
	// Root leaves the guest's limit first (as a sprite's root may): the
	// host limit is what holds the bomb.
	bombExit := make(chan string, 1)
	go func() {
		exit, err := inst.Agent().Exec(bombCtx, proto.ExecRequest{Argv: []string{"sh", "-c", "echo $$ > /run/wisp/pids/cgroup.procs && b() { b | b & wait; }; b"}, User: "root"}, agent.ExecIO{})
		bombExit <- fmt.Sprintf("%+v %v", exit, err)
	}()

	// Wait until the bomb presses on the host limit (or has ended its own
	// sandbox doing so).
	for deadline := time.Now().Add(60 * time.Second); peak.Load() < int64(max)-16; {
		select {
		case res := <-bombExit:
			t.Fatalf("the bomb ended before the host limit: %s", res)
		case <-inst.Done():
		case <-time.After(20 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
			t.Fatalf("the bomb reached only %d host tasks of %d in 60 s", peak.Load(), max)
		}
		break
	}
	for range 3 {
		if out, err := exec.Command("true").CombinedOutput(); err != nil {
			t.Fatalf("host cannot start a process during the bomb: %v %s", err, out)
		}
	}
	var rtts []time.Duration
	for range 5 {
		t0 := time.Now()
		if out, exit := sh(t, other.Agent(), "echo ok"); out != "ok\n" || exit.Code != 0 {
			t.Fatalf("other sprite during the bomb: %q %+v", out, exit)
		}
		rtts = append(rtts, time.Since(t0))
	}
	slices.Sort(rtts)
	t.Logf("other sprite's exec round trips during the bomb: %v", rtts)
	if rtts[2] > time.Second {
		t.Errorf("median exec round trip of another sprite during the bomb: %v, want under 1 s", rtts[2])
	}
	stopBomb()
	select {
	case <-inst.Done():
		t.Logf("the bomb ended its own sandbox (host tasks peaked at %d of %d)", peak.Load(), max)
	default:
		t.Logf("the bombed sandbox survived (host tasks peaked at %d of %d)", peak.Load(), max)
		inst.Kill()
		<-inst.Done()
	}
	cancel()
	<-sampled
	if p := peak.Load(); p > int64(max) {
		t.Errorf("sandbox held %d host tasks, over its limit %d", p, max)
	}
}
