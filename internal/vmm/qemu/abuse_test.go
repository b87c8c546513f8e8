package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestAbuse: in a jailed QEMU sprite, a fork bomb, a memory hog and a disk
// filler each meet their own sprite's limits with a clear error inside
// (EAGAIN, ENOSPC on the RAM-backed /dev/shm or the OOM killer, ENOSPC on
// the disk), the VMM's host memory stays under its cgroup's limit, the
// host starts processes, and another sprite's median exec round trip stays
// under 1 s throughout.
func TestAbuse(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("jails need root")
	}
	d, newSpec := fixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := func(name string, pids int) (vmm.Instance, vmm.Spec) {
		spec := newSpec(t, name, 256)
		spec.Pids = pids
		inst, err := d.Start(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inst.Kill(); <-inst.Done() })
		return inst, spec
	}
	other, _ := start("other", 0)
	rtt := func() time.Duration {
		var ds []time.Duration
		for range 5 {
			t0 := time.Now()
			if out := sh(t, other.Agent(), "echo ok"); out != "ok\n" {
				t.Fatalf("other sprite: %q", out)
			}
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		return ds[2]
	}
	t.Logf("other sprite's median exec round trip at rest: %s", rtt())
	abuser, spec := start("abuser", 64)
	run := func(script string) (chan string, context.CancelFunc) {
		actx, stop := context.WithCancel(ctx)
		done := make(chan string, 1)
		go func() {
			var out strings.Builder
			exit, err := abuser.Agent().Exec(actx, proto.ExecRequest{Argv: []string{"sh", "-c", script}, User: "root"}, agent.ExecIO{Stdout: &out, Stderr: &out})
			res := fmt.Sprintf("exit %d %s %s", exit.Code, exit.Signal, exit.Error)
			if err != nil {
				res = "error: " + err.Error()
			}
			done <- strings.TrimSpace(out.String()) + " | " + res
		}()
		return done, stop
	}
	memDir := vmm.HostCgroups.Open(cgroupOf(spec)).Dir("memory")
	for _, tc := range []struct {
		name, script string
		want         []string // one of these in the abuser's output
	}{
		// A bomb within the guest's limit of 64 processes.
		// It stops forking once told to, and then dies out.
		{"fork bomb", "rm -f /tmp/stop; b() { [ -e /tmp/stop ] || { b | b & }; }; b 2>/tmp/bomb.err; sleep 5; touch /tmp/stop; head -c 300 /tmp/bomb.err",
			[]string{"Resource temporarily unavailable", "can't fork"}},
		// /dev/shm is RAM: 2 GiB into a 256 MiB sprite.
		{"memory hog", "dd if=/dev/zero of=/dev/shm/hog bs=1M count=2048 2>&1; rm -f /dev/shm/hog",
			[]string{"No space left on device", "Killed", "Out of memory"}},
		{"disk filler", "dd if=/dev/zero of=/fill bs=1M 2>&1; sync; rm -f /fill",
			[]string{"No space left on device"}},
	} {
		done, stop := run(tc.script)
		during := rtt()
		if out, err := exec.Command("true").CombinedOutput(); err != nil {
			t.Errorf("%s: the host cannot start a process: %v %s", tc.name, err, out)
		}
		var res string
		select {
		case res = <-done:
		case <-time.After(3 * time.Minute):
			t.Errorf("%s still running after 3 min", tc.name)
		}
		stop()
		t.Logf("%s: other sprite's median exec round trip %s; abuser: %.300s", tc.name, during, res)
		if during > time.Second {
			t.Errorf("%s: median exec round trip of another sprite %s, want under 1 s", tc.name, during)
		}
		if !slices.ContainsFunc(tc.want, func(w string) bool { return strings.Contains(res, w) }) {
			t.Errorf("%s: abuser saw %q, want one of %q", tc.name, res, tc.want)
		}
		// Wait until what the abuse started has ended.
		for deadline := time.Now().Add(time.Minute); ; {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var out strings.Builder
			_, err := abuser.Agent().Exec(ctx, proto.ExecRequest{Argv: []string{"cat", "/run/wisp/pids/sprite/pids.current"}}, agent.ExecIO{Stdout: &out})
			cancel()
			if n, cerr := strconv.Atoi(strings.TrimSpace(out.String())); err == nil && cerr == nil && n < 8 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the abuser did not calm down in a minute: %q %v", tc.name, out.String(), err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if b, err := os.ReadFile(memDir + "/memory.max_usage_in_bytes"); err == nil {
		peak, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		t.Logf("abuser's QEMU peaked at %d MiB of host memory (limit %d MiB)", peak>>20, d.limits(spec).MemoryBytes>>20)
		if peak > d.limits(spec).MemoryBytes {
			t.Errorf("QEMU used %d bytes, over its limit", peak)
		}
	}
	// The abuser is whole again.
	if out := sh(t, abuser.Agent(), "echo alive"); out != "alive\n" {
		t.Errorf("abuser afterwards: %q", out)
	}
}
