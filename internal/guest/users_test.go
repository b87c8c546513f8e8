package guest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestEtcCache: the cache answers from what it read while the files are
// unchanged, and reads again after an edit in place or a file renamed
// over one.
func TestEtcCache(t *testing.T) {
	dir := t.TempDir()
	c := &etcCache{passwdPath: filepath.Join(dir, "passwd"), groupPath: filepath.Join(dir, "group")}
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	load := func() ([]user, map[string][]uint32) {
		t.Helper()
		us, gs, err := c.load()
		if err != nil {
			t.Fatal(err)
		}
		return us, gs
	}
	if _, _, err := c.load(); err == nil {
		t.Fatal("load without a passwd file: no error")
	}
	write("passwd", "root:x:0:0:root:/root:/bin/bash\nsprite:x:1000:1000::/home/sprite:/bin/bash\n")
	us, gs := load()
	if len(us) != 2 || us[1].name != "sprite" || us[1].home != "/home/sprite" || len(gs) != 0 {
		t.Fatalf("first load: %+v %v", us, gs)
	}
	// The group file appears: a missing file was part of what was cached.
	write("group", "sudo:x:27:sprite\ndocker:x:999:other,sprite\n")
	if _, gs = load(); !slices.Equal(gs["sprite"], []uint32{27, 999}) || !slices.Equal(gs["other"], []uint32{999}) {
		t.Fatalf("after the group file appeared: %v", gs)
	}
	// An edit in place that changes the size.
	write("group", "sudo:x:27:sprite\n")
	if _, gs = load(); !slices.Equal(gs["sprite"], []uint32{27}) || gs["other"] != nil {
		t.Fatalf("after an edit: %v", gs)
	}
	// A new file renamed over the old one (what useradd does), same size.
	write("passwd.new", "root:x:0:0:root:/root:/bin/bash\nsprite:x:1000:1000::/home/spritf:/bin/bash\n")
	if err := os.Rename(filepath.Join(dir, "passwd.new"), filepath.Join(dir, "passwd")); err != nil {
		t.Fatal(err)
	}
	if us, _ = load(); us[1].home != "/home/spritf" {
		t.Fatalf("after a rename over passwd: %+v", us)
	}
	// Unchanged: the cached slices themselves come back.
	us2, _ := load()
	if &us2[0] != &us[0] {
		t.Fatal("unchanged files were read again")
	}
}
