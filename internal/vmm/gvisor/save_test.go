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
