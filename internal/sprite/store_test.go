package sprite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

// TestStoreMovedOutOfPool: a daemon whose records lived in the pool
// (DataDir/wisp.db) finds them moved to StorePath, the old file gone; a
// leftover of a move cut short is removed, the moved file kept.
func TestStoreMovedOutOfPool(t *testing.T) {
	pool, outside := t.TempDir(), t.TempDir()
	ctx := context.Background()
	m := newManager(t, pool, &vmmtest.Driver{})
	if _, err := m.Create(ctx, CreateOptions{Name: "kept"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := os.Stat(filepath.Join(pool, "wisp.db")); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(outside, "wisp.db")
	at := func(o *Options) { o.StorePath = path }
	m = newManager(t, pool, &vmmtest.Driver{}, at)
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("kept"); err != nil {
		t.Errorf("after the move: %v", err)
	}
	m.Close()
	if _, err := os.Stat(filepath.Join(pool, "wisp.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old store is still in the pool: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}

	// A move cut short after the copy: both files; the moved one wins.
	if err := os.WriteFile(filepath.Join(pool, "wisp.db"), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	m = newManager(t, pool, &vmmtest.Driver{}, at)
	defer m.Close()
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("kept"); err != nil {
		t.Errorf("after a leftover: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pool, "wisp.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the leftover stays: %v", err)
	}
}

// TestCreateChecksSpace: a create or fork that the pool has no room for
// fails at once with ErrNoSpace and a hint, leaving nothing behind.
func TestCreateChecksSpace(t *testing.T) {
	free := int64(10 << 30)
	dir := t.TempDir()
	m := newManager(t, dir, &vmmtest.Driver{}, func(o *Options) {
		o.FreeBytes = func(string) (int64, error) { return free, nil }
	})
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Create(ctx, CreateOptions{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stop(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	free = 600 << 20 // under 256 MiB of memory + the reserve
	_, err := m.Create(ctx, CreateOptions{Name: "b"})
	if !errors.Is(err, errdefs.ErrNoSpace) || errdefs.Hint(err) == "" {
		t.Errorf("create in a full pool: %v (hint %q), want no space with a hint", err, errdefs.Hint(err))
	}
	if _, err := m.Fork(ctx, "a", "", "c"); !errors.Is(err, errdefs.ErrNoSpace) {
		t.Errorf("fork in a full pool: %v", err)
	}
	if l := m.List(); len(l) != 1 {
		t.Errorf("sprites after refused creates: %d", len(l))
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "sprites"))
	if len(ents) != 1 {
		t.Errorf("%d sprite folders after refused creates", len(ents))
	}
}
