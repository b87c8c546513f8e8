package sprite

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

// TestHostUIDs: each sprite gets a host uid of its own from the range
// (never the builder's first, never one a host user has), recorded and
// handed to the driver at every start; a fork gets its own; a destroyed
// sprite's is free again; a full range refuses with a hint; a restarted
// daemon keeps them and gives one to a record that had none.
func TestHostUIDs(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	d := &vmmtest.Driver{UID: true, StartFunc: func(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
		mu.Lock()
		got[spec.Name] = spec.UID
		mu.Unlock()
		return vmmtest.NewInstance(), nil
	}}
	dir := t.TempDir()
	uids := func(o *Options) { o.UIDs = UIDRange{First: 1879100000, Count: 4} }
	m := newManager(t, dir, d, uids)
	ctx := context.Background()
	a, err := m.Create(ctx, CreateOptions{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Create(ctx, CreateOptions{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(ctx, "a"); err != nil { // the fake cannot freeze a running disk
		t.Fatal(err)
	}
	f, err := m.Fork(ctx, "a", "", "f")
	if err != nil {
		t.Fatal(err)
	}
	if a.HostUID != 1879100001 || b.HostUID != 1879100002 || f.HostUID != 1879100003 {
		t.Errorf("uids a %d b %d fork %d, want 1879100001-3", a.HostUID, b.HostUID, f.HostUID)
	}
	if _, err := m.Start(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Sprite{a, b, f} {
		if got[s.Name] != s.HostUID {
			t.Errorf("%s started with uid %d, record says %d", s.Name, got[s.Name], s.HostUID)
		}
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "c"}); !errors.Is(err, errdefs.ErrUnavailable) || errdefs.Hint(err) == "" {
		t.Errorf("create with the range used up: %v (hint %q), want unavailable with a hint", err, errdefs.Hint(err))
	}
	if err := m.Destroy(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	c, err := m.Create(ctx, CreateOptions{Name: "c"})
	if err != nil || c.HostUID != b.HostUID {
		t.Errorf("create after a destroy: uid %d, %v; want the freed %d", c.HostUID, err, b.HostUID)
	}
	// A record from before uids: the next daemon gives it one.
	if _, err := m.Stop(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	c, _ = m.Get("c")
	c.HostUID = 0
	if err := m.store.Put(c); err != nil {
		t.Fatal(err)
	}
	m.Close()

	m = newManager(t, dir, d, uids)
	defer m.Close()
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []Sprite{a, f} {
		if s, _ := m.Get(want.Name); s.HostUID != want.HostUID {
			t.Errorf("%s after restart: uid %d, want %d", want.Name, s.HostUID, want.HostUID)
		}
	}
	if c, _ = m.Get("c"); c.HostUID != 1879100002 {
		t.Errorf("a record without a uid got %d at recovery, want the free 1879100002", c.HostUID)
	}
	if _, err := m.Start(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if got["c"] != c.HostUID {
		t.Errorf("c started with uid %d, want %d", got["c"], c.HostUID)
	}
	recs, _ := m.store.List()
	for _, r := range recs {
		if r.Name == "c" && r.HostUID != c.HostUID {
			t.Errorf("c's uid not persisted: %d", r.HostUID)
		}
	}
}
