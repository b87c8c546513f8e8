package gvisor

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestConfinement: a sandbox's cgroup holds its task, memory, CPU and
// disk I/O limits, and the sandbox reports them with its confinement.
func TestConfinement(t *testing.T) {
	f := fixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := f.NewSpec(t, "jail")
	spec.CPUs, spec.MemoryMiB, spec.Pids = 1, 384, 100
	inst, err := f.Driver.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	cf, err := inst.(vmm.Confined).Confinement()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("confinement: %+v", cf)
	if cf.Cgroup != "/wisp/"+containerID(spec) || cf.PidsMax != hostPids(100) || cf.MemoryMax != 384<<20 || cf.CPUMax != "100000 100000" {
		t.Errorf("sandbox limits %+v, want cgroup /wisp/%s, %d tasks, 384 MiB, 1 CPU", cf, containerID(spec), hostPids(100))
	}
	dev := loopBacking(spec.Disk)
	io := strings.Join(cf.IOMax, "\n")
	want := fmt.Sprintf("rbps=%d wbps=%d riops=%d wiops=%d", diskBps, diskBps, diskIOPS, diskIOPS)
	if dev == "" || len(cf.IOMax) != 1 || !strings.HasSuffix(io, want) {
		t.Errorf("disk %s I/O limits %q, want one line ending %q", dev, io, want)
	}
	if !cf.OwnMountNS || !cf.Seccomp {
		t.Errorf("sandbox not in a mount namespace of its own under seccomp: %+v", cf)
	}
}
