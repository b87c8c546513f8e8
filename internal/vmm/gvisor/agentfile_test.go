package gvisor

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/vmm"
)

// TestAgentFor: boots link the build's one copy in the cache; a new build
// gets a copy of its own and the old copy goes from the cache, not from
// the sprites that run it; a restore mounts the file its state holds.
func TestAgentFor(t *testing.T) {
	root := t.TempDir()
	d := &Driver{AgentCache: filepath.Join(root, "agents")}
	bin := filepath.Join(root, "bin-agent")
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(bin, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(bin, mtime, mtime)
	}
	spec := func(name string) vmm.Spec {
		dir := filepath.Join(root, name)
		os.MkdirAll(dir, 0o700)
		return vmm.Spec{Dir: dir, Agent: bin}
	}
	ino := func(p string) uint64 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return string(b)
	}
	write("build one", time.Unix(1000, 0))
	a, b := spec("a"), spec("b")
	pa, err := d.agentFor(a, "")
	if err != nil {
		t.Fatal(err)
	}
	pb, err := d.agentFor(b, "")
	if err != nil {
		t.Fatal(err)
	}
	if pa != filepath.Join(a.Dir, agentFile) || ino(pa) != ino(pb) || read(pa) != "build one" {
		t.Fatalf("boots of one build: %s %s (inodes %d %d)", pa, pb, ino(pa), ino(pb))
	}
	// a sleeps: its state holds its agent.
	state := filepath.Join(a.Dir, "sleep")
	os.MkdirAll(state, 0o700)
	if err := saveAgent(a, state); err != nil {
		t.Fatal(err)
	}
	write("build two!", time.Unix(2000, 0))
	if pb, err = d.agentFor(b, ""); err != nil || read(pb) != "build two!" {
		t.Fatalf("boot after a new build: %q %v", read(pb), err)
	}
	if cached, _ := filepath.Glob(filepath.Join(d.AgentCache, "*")); len(cached) != 1 {
		t.Errorf("cache holds %q, want the new build only", cached)
	}
	if pa, err = d.agentFor(a, state); err != nil || read(pa) != "build one" {
		t.Fatalf("restore after a new build: %q %v", read(pa), err)
	}
	// Without a cache a boot copies.
	nocache := &Driver{}
	c := spec("c")
	if pc, err := nocache.agentFor(c, ""); err != nil || read(pc) != "build two!" || ino(pc) == ino(pb) {
		t.Fatalf("boot without a cache: %v", err)
	}
	// A state from before sprites had their own copy mounts the daemon's.
	if p, err := d.agentFor(c, t.TempDir()); err != nil || p != bin {
		t.Fatalf("restore of an old state: %s %v", p, err)
	}
}
