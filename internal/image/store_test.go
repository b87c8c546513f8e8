package image

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteJSONAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "meta.json")
	for _, v := range []string{"one", "two"} {
		if err := writeJSONAtomic(p, rootRecord{Name: v}); err != nil {
			t.Fatal(err)
		}
		var got rootRecord
		if err := readJSON(p, &got); err != nil || got.Name != v {
			t.Fatalf("read back %+v, %v; want %q", got, err, v)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temp files left behind: %v", ents)
	}
	// Unmarshalable value: the old file stays intact.
	if err := writeJSONAtomic(p, func() {}); err == nil {
		t.Fatal("want error for unmarshalable value")
	}
	var got rootRecord
	if err := readJSON(p, &got); err != nil || got.Name != "two" {
		t.Fatalf("after failed write: %+v, %v", got, err)
	}
}

func TestRootErrors(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	if _, err := s.Root("nope"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Root(nope) = %v, want ErrUnknown", err)
	}
	if _, err := s.Root("minimal"); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Root(minimal) = %v, want ErrNotBuilt", err)
	}
	if _, err := s.Build(t.Context(), "nope", nil); !errors.Is(err, ErrUnknown) {
		t.Errorf("Build(nope) = %v, want ErrUnknown", err)
	}
	// A published link without meta (crash between rename and link swap is
	// impossible, but a hand-damaged store) reads as not built.
	roots := filepath.Join(s.Dir, "roots")
	os.MkdirAll(filepath.Join(roots, ".minimal-1"), 0o755)
	os.Symlink(".minimal-1", filepath.Join(roots, "minimal"))
	if _, err := s.Root("minimal"); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Root(minimal) without meta = %v, want ErrNotBuilt", err)
	}
	infos, err := s.List()
	if err != nil || len(infos) != 2 || infos[0].Name != "minimal" || infos[0].Built || infos[1].Name != "dev" {
		t.Fatalf("List = %+v, %v", infos, err)
	}
}
