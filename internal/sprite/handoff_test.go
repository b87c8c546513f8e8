package sprite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

// fakePlacement records what the Manager tells a cluster.
type fakePlacement struct {
	mu       sync.Mutex
	taken    map[string]bool
	removed  []string
	atRest   chan string
	refusing bool
}

func (p *fakePlacement) Reserve(ctx context.Context, name string) (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refusing || p.taken[name] {
		return nil, errdefs.ErrConflict
	}
	p.taken[name] = true
	return func() { p.mu.Lock(); delete(p.taken, name); p.mu.Unlock() }, nil
}

func (p *fakePlacement) Removed(ctx context.Context, rec Sprite) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removed = append(p.removed, rec.Name)
	delete(p.taken, rec.Name)
}

func (p *fakePlacement) AtRest(ctx context.Context, name string) { p.atRest <- name }

// TestHandoff: the Manager asks its Placement before a create, tells it of
// a stop and a destroy; CopyRest copies the files of a sprite at rest;
// Park takes it off the host (refused when it changed since); Adopt takes
// it in again, on another Manager, with its files.
func TestHandoff(t *testing.T) {
	start := func(context.Context, vmm.Spec) (vmm.Instance, error) {
		i := vmmtest.NewInstance()
		i.Client = &agent.Client{}
		return i, nil
	}
	p := &fakePlacement{taken: map[string]bool{"elsewhere": true}, atRest: make(chan string, 8)}
	m := newManager(t, t.TempDir(), &vmmtest.Driver{StartFunc: start}, func(o *Options) { o.Placement = p })
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "elsewhere"}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("create of a name the cluster has: %v, want a conflict", err)
	}
	if _, err := m.Get("elsewhere"); err == nil {
		t.Fatal("a refused create left a sprite")
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.CopyRest("a", t.TempDir()); !errors.Is(err, errdefs.ErrState) {
		t.Errorf("CopyRest of a running sprite: %v, want a state error", err)
	}
	sp, err := m.Stop(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-p.atRest:
		if n != "a" {
			t.Fatalf("at rest: %q", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Placement was not told of the stop")
	}
	if err := os.WriteFile(m.secretsPath(sp), []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	rec, files, err := m.CopyRest("a", out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		if _, err := os.Stat(f.Path); err != nil || !filepath.IsAbs(f.Path) {
			t.Errorf("copied file %s: %v", f.Path, err)
		}
	}
	if slices.Sort(names); !slices.Equal(names, []string{"disk.img", "secrets.json"}) {
		t.Fatalf("rest files of a stopped sprite: %v", names)
	}

	if err := m.Park("a", filepath.Join(t.TempDir(), "x"), func(Sprite) bool { return false }); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("park of a changed sprite: %v", err)
	}
	if _, err := m.Get("a"); err != nil {
		t.Fatal("a refused park took the sprite away")
	}
	warm := filepath.Join(t.TempDir(), "warm")
	if err := m.Park("a", warm, func(now Sprite) bool { return now.State == rec.State }); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after park: %v", err)
	}
	if _, err := m.Start(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("start after park: %v", err)
	}
	if _, err := os.Stat(filepath.Join(warm, "disk.img")); err != nil {
		t.Fatalf("warm copy: %v", err)
	}

	// Another host adopts it.
	m2 := newManager(t, t.TempDir(), &vmmtest.Driver{StartFunc: start})
	defer m2.Close()
	if _, err := m2.Adopt(ctx, Sprite{Name: "b", State: Running, Backend: "fake"}, t.TempDir()); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("adopt of a running sprite: %v", err)
	}
	got, err := m2.Adopt(ctx, rec, warm)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "a" || got.State != Stopped || got.ID != rec.ID {
		t.Fatalf("adopted: %+v", got)
	}
	if _, err := os.Stat(m2.DiskPath(got)); err != nil {
		t.Fatalf("adopted disk: %v", err)
	}
	if _, err := m2.Adopt(ctx, rec, t.TempDir()); !errors.Is(err, errdefs.ErrExists) {
		t.Errorf("adopting it twice: %v", err)
	}
	if sp, err := m2.Start(ctx, "a"); err != nil || sp.State != Running {
		t.Fatalf("start after adopt: %+v %v", sp, err)
	}
	if err := m.Destroy(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("destroy on the old host: %v", err)
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Destroy(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.removed, []string{"c"}) {
		t.Errorf("removed: %v", p.removed)
	}
}
