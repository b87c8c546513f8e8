package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestJail: a sprite's QEMU runs as the sprite's own uid and gid, chrooted
// into an empty folder, under seccomp, in a cgroup of its own whose task,
// memory and CPU limits follow the sprite's size; the guest meets its own
// process limit with EAGAIN; the jail holds across a sleep and wake (save
// and restore, whose state appears whole or not at all); and the cgroup goes
// with the VM.
func TestJail(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("jails need root")
	}
	d, newSpec := fixture(t)
	spec := newSpec(t, "jail", 256)
	spec.Pids = 32
	spec.UID = 1879000000 + os.Getpid()%10000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })

	check := func(inst vmm.Instance) {
		t.Helper()
		cf, err := inst.(vmm.Confined).Confinement()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("confinement: %+v", cf)
		wantMem := int64(256+tcgOverheadMiB) << 20
		if d.Accel == "kvm" {
			wantMem = int64(256+overheadMiB) << 20
		}
		switch {
		case cf.UID != spec.UID || cf.GID != spec.UID:
			t.Errorf("QEMU runs as %d:%d, want the sprite's %d", cf.UID, cf.GID, spec.UID)
		case cf.Root != filepath.Join(spec.Dir, jailDir):
			t.Errorf("QEMU's root is %q, want its jail %s", cf.Root, filepath.Join(spec.Dir, jailDir))
		case !cf.Seccomp:
			t.Error("QEMU has no seccomp filter")
		case cf.Cgroup != "/"+cgroupOf(spec):
			t.Errorf("QEMU's cgroup is %q, want /%s", cf.Cgroup, cgroupOf(spec))
		case cf.PidsMax != qemuTasks || cf.MemoryMax != wantMem || cf.CPUMax != "150000 100000":
			t.Errorf("limits: %d tasks, %d bytes, cpu %q; want %d, %d, 150000 100000", cf.PidsMax, cf.MemoryMax, cf.CPUMax, qemuTasks, wantMem)
		}
		if ents, err := os.ReadDir(filepath.Join(spec.Dir, jailDir)); err != nil || len(ents) != 0 {
			t.Errorf("jail holds %v (%v), want nothing", ents, err)
		}
	}
	check(inst)
	if b, err := os.ReadFile(filepath.Join(vmm.HostCgroups.Open(cgroupOf(spec)).Dir("cpu"), "cpu.stat")); err == nil {
		t.Logf("cpu.stat after boot: %q", b)
	}

	out := sh(t, inst.Agent(), "sh -c 'for i in $(seq 40); do sleep 1000 & done' 2>&1; cat /run/wisp/pids/sprite/pids.max; pkill sleep; true")
	if !strings.Contains(out, "Resource temporarily unavailable") || !strings.Contains(out, "32\n") {
		t.Errorf("40 processes in a sprite limited to 32: %q, want EAGAIN", out)
	}

	// Sleep and wake: the migration stream goes through descriptors, so
	// neither end needs a path inside the jail.
	sh(t, inst.Agent(), "echo before > /tmp/mark")
	// The sleep state appears whole or not at all: while the save is
	// under way (during), its folder is not there yet (a daemon killed
	// now must not take a half-written state for a sleep).
	during := func() error {
		if _, err := os.Stat(vmm.SleepDir(spec)); err == nil {
			t.Error("the sleep folder exists before its state is whole")
		}
		return nil
	}
	if err := d.Save(ctx, inst, vmm.SleepDir(spec), false, during); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(vmm.SleepDir(spec), stateFile)); err != nil {
		t.Errorf("after the save: %v", err)
	}
	inst, err = d.Restore(ctx, spec, vmm.SleepDir(spec))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	if got := sh(t, inst.Agent(), "cat /tmp/mark"); got != "before\n" {
		t.Errorf("after wake: %q", got)
	}
	check(inst)

	dir := vmm.HostCgroups.Open(cgroupOf(spec)).Dir("pids")
	inst.Kill()
	<-inst.Done()
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("cgroup %s left after the VM ended", dir)
	}
}
