package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTaskCgroup: QEMU runs in a pids cgroup of its own (its threads are
// bounded), the guest meets its own process limit with EAGAIN, and the
// cgroup goes with the VM.
func TestTaskCgroup(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("cgroups need root")
	}
	d, newSpec := fixture(t)
	spec := newSpec(t, "pids", 256)
	spec.Pids = 32
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })

	cg, err := os.ReadFile("/proc/" + strconv.Itoa(inst.Info().Pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want := "/wisp/" + taskCgroup(spec)
	if !strings.Contains(string(cg), want+"\n") {
		t.Fatalf("QEMU's cgroups:\n%s\nwant %s", cg, want)
	}
	dir := "/sys/fs/cgroup/pids" + want
	if _, err := os.Stat(dir); err != nil {
		dir = "/sys/fs/cgroup" + want
	}
	max, _ := os.ReadFile(filepath.Join(dir, "pids.max"))
	cur, _ := os.ReadFile(filepath.Join(dir, "pids.current"))
	if strings.TrimSpace(string(max)) != strconv.Itoa(qemuTasks) {
		t.Errorf("pids.max = %q, want %d", max, qemuTasks)
	}
	t.Logf("QEMU holds %s tasks", strings.TrimSpace(string(cur)))

	out := sh(t, inst.Agent(), "sh -c 'for i in $(seq 40); do sleep 1000 & done' 2>&1; cat /run/wisp/pids/sprite/pids.max; pkill sleep; true")
	if !strings.Contains(out, "Resource temporarily unavailable") || !strings.Contains(out, "32\n") {
		t.Errorf("40 processes in a sprite limited to 32: %q, want EAGAIN", out)
	}

	inst.Kill()
	<-inst.Done()
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("cgroup %s left after the VM ended", dir)
	}
}
