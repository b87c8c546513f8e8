package integration

import (
	"strings"
	"testing"
)

// TestPidsLimit: `wisp create --pids` sets the sprite's process limit, wisp
// info shows it, and inside the sprite a burst of processes meets it.
func TestPidsLimit(t *testing.T) {
	d := newDaemon(t, "gvisor")
	d.fails("pids 5 out of range", "create", "few", "--pids", "5")
	d.ok("create", "p", "--pids", "64")
	if s := d.info("p"); s.Pids != 64 {
		t.Fatalf("info: pids %d, want 64", s.Pids)
	}
	if out := d.ok("info", "p"); !strings.Contains(out, "64 (process limit)") {
		t.Errorf("info does not show the limit:\n%s", out)
	}
	out, _, _ := d.wisp(nil, "exec", "p", "--user", "root", "--", "sh", "-c",
		"cat /run/wisp/pids/sprite/pids.max; sh -c 'for i in $(seq 100); do sleep 100 & done' 2>&1; pkill sleep; true")
	if !strings.HasPrefix(out, "64\n") || !strings.Contains(out, "Resource temporarily unavailable") {
		t.Errorf("100 processes in a sprite limited to 64: %q", out)
	}
	d.ok("create", "q")
	if s := d.info("q"); s.Pids != 1024 {
		t.Errorf("default limit: %d, want 1024", s.Pids)
	}
}
