package integration

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCheckpoint: restore undoes damage, fork diverges, a memory checkpoint
// resumes a counter, half-made checkpoints vanish after a crash, bad input
// changes nothing.
func TestCheckpoint(t *testing.T) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) { testCheckpoint(t, b) })
	}
}

func testCheckpoint(t *testing.T, backend string) {
	d := newDaemon(t, backend)
	d.ok("create", "c1", "--idle", "never")
	data := make([]byte, 3<<20)
	rand.Read(data)
	d.mustRun(data, "c1", "sh", "-c", "cat > /home/sprite/keep.bin")
	d.ok("checkpoint", "create", "c1", "--comment", "clean")
	d.ok("exec", "c1", "--", "sh", "-c", "echo later > /home/sprite/later; rm -rf /home/sprite/*")
	if out := d.ok("exec", "c1", "--", "ls", "/home/sprite"); out != "" {
		t.Fatalf("rm -rf left %q", out)
	}
	d.ok("checkpoint", "create", "c1")
	var list []struct {
		ID      string `json:"id"`
		Comment string `json:"comment"`
	}
	json.Unmarshal([]byte(d.ok("checkpoint", "list", "c1", "--json")), &list)
	if len(list) != 2 || list[0].ID != "v1" || list[0].Comment != "clean" || list[1].ID != "v2" {
		t.Fatalf("checkpoint list: %+v", list)
	}

	d.ok("restore", "c1", "v1")
	if got := d.ok("exec", "c1", "--", "sha256sum", "/home/sprite/keep.bin"); !strings.HasPrefix(got, sha(data)) {
		t.Errorf("after restore: %q, want %s", got, sha(data))
	}
	if _, _, code := d.wisp(nil, "exec", "c1", "--", "test", "-e", "/home/sprite/later"); code == 0 {
		t.Error("a file written after the checkpoint survived the restore")
	}
	if len(d.ckList("c1")) != 2 {
		t.Error("restore dropped later checkpoints")
	}

	// Fork from v1: independent, with its own identity.
	d.ok("fork", "c1", "c2", "--from", "v1")
	if out := d.ok("exec", "c2", "--", "hostname"); out != "c2\n" {
		t.Errorf("fork hostname %q", out)
	}
	d.ok("exec", "c2", "--", "sh", "-c", "echo fork > /home/sprite/only-fork")
	d.ok("exec", "c1", "--", "sh", "-c", "echo parent > /home/sprite/only-parent")
	if _, _, code := d.wisp(nil, "exec", "c1", "--", "test", "-e", "/home/sprite/only-fork"); code == 0 {
		t.Error("the fork's write reached the parent")
	}
	if _, _, code := d.wisp(nil, "exec", "c2", "--", "test", "-e", "/home/sprite/only-parent"); code == 0 {
		t.Error("the parent's write reached the fork")
	}
	id1 := d.ok("exec", "c1", "--", "cat", "/etc/machine-id")
	id2 := d.ok("exec", "c2", "--", "cat", "/etc/machine-id")
	if id1 == id2 {
		t.Errorf("fork shares the machine-id %q", id1)
	}
	d.ok("destroy", "c2")

	// A memory checkpoint resumes a running counter.
	d.ok("exec", "c1", "--", "sh", "-c", "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done' </dev/null >/dev/null 2>&1 &")
	before := counterAbove(t, d, "c1", 3)
	d.ok("checkpoint", "create", "c1", "--memory")
	// Far enough ahead (3 s of ticks) that the counter cannot get there
	// again between the restore and the next read.
	later := counterAbove(t, d, "c1", counter(t, d, "c1")+60)
	d.ok("restore", "c1", "v3")
	back := counter(t, d, "c1")
	if back < before || back >= later {
		t.Errorf("counter %d before the checkpoint, %d before restore, %d after: not resumed from the checkpoint", before, later, back)
	}
	counterAbove(t, d, "c1", back) // and it keeps counting

	// Bad input: a clear error, nothing changed.
	d.fails(`no checkpoint "v99"`, "restore", "c1", "v99")
	d.fails("already exists", "fork", "c1", "c1")
	d.fails(`sprite "ghost": not found`, "checkpoint", "create", "ghost")
	d.fails(`no checkpoint "v99"`, "checkpoint", "delete", "c1", "v99")
	if n := len(d.ckList("c1")); n != 3 {
		t.Errorf("bad input changed the checkpoints: %d", n)
	}

	// Delete gives the space back.
	d.ok("checkpoint", "delete", "c1", "v2")
	if n := len(d.ckList("c1")); n != 2 {
		t.Errorf("after delete: %d checkpoints", n)
	}

	// A crash mid-checkpoint: the half-made folders vanish, the sprite works.
	id := d.spriteID("c1")
	ckDir := filepath.Join(d.dir, "data", "pool", "sprites", id, "checkpoints")
	os.MkdirAll(filepath.Join(ckDir, ".tmp-v9"), 0o700)
	os.MkdirAll(filepath.Join(ckDir, "v9"), 0o700)
	d.kill9AndRestart()
	for _, f := range []string{".tmp-v9", "v9"} {
		if _, err := os.Stat(filepath.Join(ckDir, f)); !os.IsNotExist(err) {
			t.Errorf("half-made checkpoint folder %s survived the restart", f)
		}
	}
	if n := len(d.ckList("c1")); n != 2 {
		t.Errorf("after the crash: %d checkpoints", n)
	}
	d.ok("exec", "c1", "--", "true")
}

func (d *daemon) mustRun(stdin []byte, name string, argv ...string) string {
	d.t.Helper()
	out, errOut, code := d.wisp(stdin, append([]string{"exec", name, "--"}, argv...)...)
	if code != 0 {
		d.t.Fatalf("exec %v: %d %s", argv, code, errOut)
	}
	return out
}

func (d *daemon) ckList(name string) []json.RawMessage {
	d.t.Helper()
	var l []json.RawMessage
	json.Unmarshal([]byte(d.ok("checkpoint", "list", name, "--json")), &l)
	return l
}

func (d *daemon) spriteID(name string) string {
	d.t.Helper()
	var s struct{ ID string }
	json.Unmarshal([]byte(d.ok("info", name, "--json")), &s)
	return s.ID
}

// readCounter reads /tmp/count, which the counter loop replaces by rename.
func readCounter(d *daemon, name string) (int, error) {
	out, e, code := d.wisp(nil, "exec", name, "--", "cat", "/tmp/count")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if code != 0 || err != nil {
		return 0, fmt.Errorf("read the counter in %s: exit %d, %q %s", name, code, out, e)
	}
	return n, nil
}

// counter reads the counter, which must exist by now.
func counter(t *testing.T, d *daemon, name string) int {
	t.Helper()
	n, err := readCounter(d, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// counterAbove waits until the counter in /tmp/count exists and passes n.
func counterAbove(t *testing.T, d *daemon, name string, n int) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, err := readCounter(d, name)
		if err == nil && v > n {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter in %s stuck at or below %d (last read: %d, %v)", name, n, v, err)
		}
		time.Sleep(50 * time.Millisecond) // the counter ticks every 50 ms
	}
}
