package guest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// TestList: every entry once, with what stat says of it (symlinks not
// followed), and a folder of more than proto.MaxList entries truncated.
func TestList(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644)
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	os.Symlink("f", filepath.Join(dir, "l"))
	got, truncated, err := list(dir)
	if err != nil || truncated {
		t.Fatalf("list: %v, truncated %v", err, truncated)
	}
	slices.SortFunc(got, func(a, b proto.FileInfo) int { return cmpString(a.Name, b.Name) })
	if len(got) != 3 || got[0].Name != "d" || !got[0].IsDir || got[1].Name != "f" || got[1].Size != 4 || got[2].Name != "l" || got[2].Link != "f" || got[2].IsDir {
		t.Fatalf("list: %+v", got)
	}
	if _, _, err := list(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("list of a missing folder: %v, want not exist", err)
	}
	if _, _, err := list(filepath.Join(dir, "f")); err == nil {
		t.Fatal("list of a file succeeded")
	}

	big := t.TempDir()
	for i := range proto.MaxList + 5 {
		if err := os.WriteFile(filepath.Join(big, strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, truncated, err = list(big)
	if err != nil || !truncated || len(got) != proto.MaxList {
		t.Fatalf("list of %d: %d entries, truncated %v, %v", proto.MaxList+5, len(got), truncated, err)
	}
	seen := map[string]bool{}
	for _, f := range got {
		if seen[f.Name] {
			t.Fatalf("%s listed twice", f.Name)
		}
		seen[f.Name] = true
	}
	names, err := readDirNames(big, proto.MaxList+100)
	if err != nil || len(names) != proto.MaxList+5 {
		t.Fatalf("readDirNames: %d names, %v", len(names), err)
	}
}
