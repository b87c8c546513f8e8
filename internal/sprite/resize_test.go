package sprite

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

// TestResize: a running sprite keeps its size until its next cold boot,
// which gives it the new one (its disk grown); a stopped one takes it at
// once; bad sizes change nothing; the meter's Allow refuses a start.
func TestResize(t *testing.T) {
	var specs []vmm.Spec
	m := newManager(t, t.TempDir(), &vmmtest.Driver{StartFunc: func(_ context.Context, s vmm.Spec) (vmm.Instance, error) {
		specs = append(specs, s)
		i := vmmtest.NewInstance()
		i.Client = &agent.Client{}
		return i, nil
	}})
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Size{{CPUs: 99}, {MemoryMiB: 64}, {DiskGiB: 1000}} {
		if _, _, err := m.Resize(ctx, "a", bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("resize %+v: %v, want invalid", bad, err)
		}
	}
	sp, applied, err := m.Resize(ctx, "a", Size{CPUs: 2, MemoryMiB: 512, DiskGiB: 2})
	if err != nil || applied || sp.CPUs != 1 || sp.Pending == nil || *sp.Pending != (Size{2, 512, 2}) {
		t.Fatalf("resize running: %+v applied=%v %v", sp, applied, err)
	}
	if _, err := m.Stop(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	sp, _ = m.Get("a")
	last := specs[len(specs)-1]
	if sp.Pending != nil || sp.CPUs != 2 || sp.MemoryMiB != 512 || sp.DiskGiB != 2 || last.CPUs != 2 || last.MemoryMiB != 512 {
		t.Fatalf("after a cold boot: %+v, booted with %d CPUs %d MiB", sp, last.CPUs, last.MemoryMiB)
	}
	if fi, err := os.Stat(m.DiskPath(sp)); err != nil || fi.Size() != 2<<30 {
		t.Fatalf("disk not grown: %v %v", fi.Size(), err)
	}
	if _, _, err := m.Resize(ctx, "a", Size{DiskGiB: 1}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("shrinking the disk: %v", err)
	}
	m.Stop(ctx, "a")
	sp, applied, err = m.Resize(ctx, "a", Size{CPUs: 3})
	if err != nil || !applied || sp.CPUs != 3 || sp.Pending != nil {
		t.Fatalf("resize stopped: %+v applied=%v %v", sp, applied, err)
	}
	m.opt.Allow = func(Sprite) error { return errdefs.ErrState }
	if _, err := m.Start(ctx, "a"); !errors.Is(err, errdefs.ErrState) {
		t.Errorf("start refused by Allow: %v", err)
	}
	if sp, _ := m.Get("a"); sp.State != Stopped {
		t.Errorf("a refused start left it %s", sp.State)
	}
}
