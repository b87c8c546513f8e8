package gvisor

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestSleepWake: a sleeping sprite holds no process and no mount; it wakes
// with its machine-id and clock, twice from the same image, and a restored
// sandbox can be adopted like a started one.
func TestSleepWake(t *testing.T) {
	f := fixture(t)
	d := f.Driver.(*Driver)
	spec := f.NewSpec(t, "sleep")
	spec.MachineID = "0123456789abcdef0123456789abcdef"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	if out, _ := sh(t, inst.Agent(), "cat /etc/machine-id"); out != spec.MachineID+"\n" {
		t.Errorf("machine-id = %q, want %s", out, spec.MachineID)
	}
	sh(t, inst.Agent(), "echo 42 > /tmp/kept")
	image := filepath.Join(spec.Dir, "sleep")
	if err := d.Save(ctx, inst, image, false, nil); err != nil {
		t.Fatal(err)
	}
	if dev := loopBacking(spec.Disk); dev != "" {
		t.Errorf("disk still attached to %s while asleep", dev)
	}
	if ps, _ := filepath.Glob("/proc/[0-9]*/cmdline"); len(ps) > 0 {
		for _, p := range ps {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), containerID(spec)) {
				t.Errorf("a process of the sleeping sandbox remains: %s %q", p, b)
			}
		}
	}
	if tmps, _ := filepath.Glob(image + "*"); len(tmps) != 1 {
		t.Errorf("image folders: %v, want only %s", tmps, image)
	}

	time.Sleep(1100 * time.Millisecond) // the guest's clock must not lag by this
	for range 2 {
		woke, err := d.Restore(ctx, spec, image)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := sh(t, woke.Agent(), "cat /tmp/kept; date +%s")
		f := strings.Fields(out)
		if len(f) != 2 || f[0] != "42" {
			t.Fatalf("after wake: %q", out)
		}
		if sec, _ := strconv.ParseInt(f[1], 10, 64); time.Now().Unix()-sec > 1 {
			t.Errorf("guest clock %d, host %d", sec, time.Now().Unix())
		}
		woke.Close()
		again, err := d.Adopt(ctx, spec)
		if err != nil {
			t.Fatalf("Adopt after Restore: %v", err)
		}
		if out, _ := sh(t, again.Agent(), "cat /tmp/kept"); out != "42\n" {
			t.Errorf("after adopt: %q", out)
		}
		again.Kill()
		<-again.Done()
	}
}

// TestFreezeLimit: a freeze that is never thawed ends by itself, and the
// late thaw says the copy may be torn.
func TestFreezeLimit(t *testing.T) {
	f := fixture(t)
	spec := f.NewSpec(t, "freeze")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	thaw, err := freezeFS(filepath.Join(spec.Dir, rootfsDir), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// Blocks until the timer thaws the mount.
	if out, exit := sh(t, inst.Agent(), "echo x > /tmp/late && sync"); exit.Code != 0 {
		t.Fatalf("write after the limit: %q %+v", out, exit)
	}
	if err := thaw(); err == nil || !strings.Contains(err.Error(), "thawed by itself") {
		t.Errorf("late thaw: %v, want a torn-copy error", err)
	}
}

// TestSaveWhileStreaming: a checkpoint taken while an exec streams output
// ends that exec, and the agent answers again afterwards.
func TestSaveWhileStreaming(t *testing.T) {
	f := fixture(t)
	d := f.Driver.(*Driver)
	spec := f.NewSpec(t, "stream")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	for k := range 5 {
		ag := inst.Agent()
		streamed := make(chan error, 1)
		go func() {
			_, err := ag.Exec(ctx, proto.ExecRequest{Argv: []string{"yes"}}, agent.ExecIO{Stdout: io.Discard})
			streamed <- err
		}()
		time.Sleep(50 * time.Millisecond)
		if err := d.Save(ctx, inst, filepath.Join(spec.Dir, "snap"), true, func() error { return nil }); err != nil {
			t.Fatalf("Save %d: %v", k, err)
		}
		if err := <-streamed; err == nil {
			t.Error("the streaming exec survived the checkpoint")
		}
		if out, _ := sh(t, inst.Agent(), "echo ok"); out != "ok\n" {
			t.Fatalf("after Save %d: %q", k, out)
		}
	}
}

// TestWakeAfterAgentUpgrade: a new build of the agent (the daemon's file
// replaced) does not stop a sleeping sprite from waking with its processes:
// it runs on with the agent it was saved with, and gets the new one at its
// next cold boot. (gVisor refuses a restore whose mounted files changed.)
func TestWakeAfterAgentUpgrade(t *testing.T) {
	f := fixture(t)
	d := f.Driver.(*Driver)
	spec := f.NewSpec(t, "upgrade")
	build := func(extra int) int {
		t.Helper()
		b, err := os.ReadFile(f.NewSpec(t, "x").Agent)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, make([]byte, extra)...) // trailing bytes: an ELF that runs the same
		if err := os.WriteFile(spec.Agent+".new", b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(spec.Agent+".new", spec.Agent); err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	spec.Agent = filepath.Join(t.TempDir(), "wisp-agent")
	oldSize := build(0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	agentSize := func() string {
		t.Helper()
		out, _ := sh(t, inst.Agent(), "stat -c %s "+guestAgent)
		return strings.TrimSpace(out)
	}
	if got := agentSize(); got != strconv.Itoa(oldSize) {
		t.Fatalf("agent in the sandbox has %s bytes, want %d", got, oldSize)
	}
	sh(t, inst.Agent(), "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > /tmp/upgrade.pid")
	if err := d.Save(ctx, inst, vmm.SleepDir(spec), false, nil); err != nil {
		t.Fatal(err)
	}
	newSize := build(4096)
	inst, err = d.Restore(ctx, spec, vmm.SleepDir(spec))
	if err != nil {
		t.Fatalf("wake after the agent was rebuilt: %v", err)
	}
	if out, exit := sh(t, inst.Agent(), "kill -0 $(cat /tmp/upgrade.pid)"); exit.Code != 0 {
		t.Fatalf("the process from before the sleep is gone: %s", out)
	}
	if got := agentSize(); got != strconv.Itoa(oldSize) {
		t.Errorf("woken sprite's agent has %s bytes, want the old %d", got, oldSize)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if inst, err = d.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got := agentSize(); got != strconv.Itoa(newSize) {
		t.Errorf("after a cold boot the agent has %s bytes, want the new %d", got, newSize)
	}
}
