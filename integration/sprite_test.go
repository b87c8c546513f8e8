package integration

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// TestSprite walks one sprite per backend through the foundation's list:
// bad input, exec semantics, PTY, copies, persistence across stop/start
// and across a kill -9 of the daemon, destroy.
func TestSprite(t *testing.T) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) { testSprite(t, b) })
	}
}

func testSprite(t *testing.T, backend string) {
	d := newDaemon(t, backend)

	// Bad input: a clear error, nothing changed.
	d.fails(`sprite "ghost": not found`, "exec", "ghost", "--", "true")
	d.fails(`sprite "ghost": not found`, "info", "ghost")
	d.fails("invalid sprite name", "create", "Bad_Name")
	d.fails("cpus 999 out of range", "create", "big", "--cpus", "999")
	d.fails("memory 99999999 MiB out of range", "create", "big", "--memory", "99999999")
	d.fails("disk 100000 GiB out of range", "create", "big", "--disk", "100000")
	d.fails(`unknown image`, "create", "big", "--image", "nope")
	if l := d.list(); len(l) != 0 {
		t.Fatalf("bad input left sprites: %+v", l)
	}

	d.ok("create", "s1")
	d.fails("already exists", "create", "s1")
	s := d.info("s1")
	if s.State != "running" || s.Backend != backend || s.Accel == "" || s.CPUs != 1 || s.MemoryMiB != 256 || s.DiskGiB != 2 || s.CreatedAt == "" {
		t.Fatalf("info: %+v", s)
	}

	// Exit codes and signals.
	if _, _, code := d.wisp(nil, "exec", "s1", "--", "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("exit 3 gave %d", code)
	}
	if _, _, code := d.wisp(nil, "exec", "s1", "--", "sh", "-c", "kill -9 $$"); code != 137 {
		t.Errorf("kill -9 gave %d, want 137", code)
	}
	if _, errOut, code := d.wisp(nil, "exec", "s1", "--", "no-such-cmd"); code != 127 || !strings.Contains(errOut, "not found") {
		t.Errorf("missing command: %d %q", code, errOut)
	}
	out, errOut, code := d.wisp(nil, "exec", "s1", "--env", "A=b c", "--dir", "/tmp", "--", "sh", "-c", `echo "$A"; pwd; echo err >&2`)
	if code != 0 || out != "b c\n/tmp\n" || errOut != "err\n" {
		t.Errorf("env/dir/stderr: %q %q %d", out, errOut, code)
	}
	// Stdin piping.
	in := make([]byte, 2<<20)
	rand.Read(in)
	out, _, code = d.wisp(in, "exec", "s1", "--", "sha256sum")
	if code != 0 || !strings.HasPrefix(out, sha(in)) {
		t.Errorf("stdin: %q, want %s", out, sha(in))
	}
	// 10 MB of output, intact.
	sum := strings.Fields(d.ok("exec", "s1", "--", "sh", "-c", "head -c 10000000 /dev/urandom > /tmp/big; sha256sum /tmp/big"))[0]
	out, _, _ = d.wisp(nil, "exec", "s1", "--", "cat", "/tmp/big")
	if len(out) != 10000000 || sha([]byte(out)) != sum {
		t.Errorf("10 MB output: %d bytes, sha %s, want %s", len(out), sha([]byte(out)), sum)
	}
	// A PTY session, and the console.
	out = d.ok("exec", "s1", "--tty", "--", "sh", "-c", "tty; stty size")
	if !strings.Contains(out, "/dev/pts/") {
		t.Errorf("tty: %q", out)
	}
	out, _, code = d.wisp([]byte("echo hi-$((40+2))\nexit\n"), "console", "s1")
	if code != 0 || !strings.Contains(out, "hi-42") {
		t.Errorf("console: %d %q", code, out)
	}

	// Files both ways, and a directory.
	local := t.TempDir()
	data := make([]byte, 5<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(local, "f.bin"), data, 0o644)
	d.ok("cp", filepath.Join(local, "f.bin"), "s1:/home/sprite/")
	if got := d.ok("exec", "s1", "--", "sha256sum", "/home/sprite/f.bin"); !strings.HasPrefix(got, sha(data)) {
		t.Errorf("copied in: %q, want %s", got, sha(data))
	}
	d.ok("cp", "s1:/home/sprite/f.bin", filepath.Join(local, "back.bin"))
	if back, _ := os.ReadFile(filepath.Join(local, "back.bin")); sha(back) != sha(data) {
		t.Errorf("copied out: %d bytes, sha mismatch", len(back))
	}
	os.MkdirAll(filepath.Join(local, "tree/sub"), 0o755)
	os.WriteFile(filepath.Join(local, "tree/sub/x"), []byte("x"), 0o600)
	d.ok("cp", filepath.Join(local, "tree"), "s1:/home/sprite/tree2")
	d.ok("cp", "s1:/home/sprite/tree2", filepath.Join(local, "tree3"))
	if b, err := os.ReadFile(filepath.Join(local, "tree3/sub/x")); err != nil || string(b) != "x" {
		t.Errorf("directory round trip: %q %v", b, err)
	}
	d.fails("no such file", "cp", "s1:/no/such", local)
	d.fails("must be absolute", "cp", "s1:relative", local)

	// Persistence across stop/start.
	d.ok("exec", "s1", "--", "sh", "-c", "echo kept > /home/sprite/mark")
	d.ok("stop", "s1")
	if s := d.info("s1"); s.State != "stopped" {
		t.Fatalf("after stop: %+v", s)
	}
	// Any use starts a stopped sprite: no `wisp start` needed.
	if out := d.ok("exec", "s1", "--", "cat", "/home/sprite/mark"); out != "kept\n" {
		t.Errorf("exec on a stopped sprite: %q", out)
	}
	if s := d.info("s1"); s.State != "running" {
		t.Fatalf("after an exec on a stopped sprite: %+v", s)
	}
	d.ok("stop", "s1")
	d.ok("start", "s1")
	if out := d.ok("exec", "s1", "--", "cat", "/home/sprite/mark", "/home/sprite/f.bin"); !strings.HasPrefix(out, "kept\n") || len(out) != 5+len(data) {
		t.Errorf("after stop/start: %d bytes", len(out))
	}

	// Persistence across kill -9 of the daemon: the sprite keeps running
	// and is adopted.
	pid := d.info("s1").Pid
	d.ok("exec", "s1", "--", "sh", "-c", "echo before-crash > /tmp/volatile")
	d.kill9AndRestart()
	if s := d.info("s1"); s.State != "running" || s.Pid != pid {
		t.Fatalf("after daemon kill -9: %+v (pid was %d)", s, pid)
	}
	if out := d.ok("exec", "s1", "--", "cat", "/tmp/volatile", "/home/sprite/mark"); out != "before-crash\nkept\n" {
		t.Errorf("after daemon kill -9: %q", out)
	}
	logs := d.ok("logs", "s1")
	if backend == "qemu" && !strings.Contains(logs, "wisp-agent ready") {
		t.Errorf("console log lacks the agent's start line: %q", logs)
	}

	d.ok("destroy", "s1")
	if l := d.list(); len(l) != 0 {
		t.Errorf("after destroy: %+v", l)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.dir, "data", "pool", "sprites")); len(ents) != 0 {
		t.Errorf("destroy left %d sprite folders", len(ents))
	}
	d.fails("not found", "destroy", "s1")
}

// TestWarmSnapshotCrash: a daemon killed while it builds a warm snapshot
// leaves no VM behind once the next daemon is up.
func TestWarmSnapshotCrash(t *testing.T) {
	d := newDaemon(t, "qemu")
	d.ok("create", "w1")
	// Kill the daemon once the snapshot's throwaway VM has started (its
	// pid file is written when QEMU runs); it is still booting then.
	pids := filepath.Join(d.dir, "data", "pool", "templates", "*.tmp-*", "vm", "qemu.pid")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m, _ := filepath.Glob(pids); len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no warm snapshot build started after a cold create")
		}
	}
	d.kill9AndRestart()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), filepath.Join(d.dir, "data", "pool", "templates")) {
			t.Errorf("a half-built warm snapshot's VM survived the restart: %s", strings.ReplaceAll(string(b), "\x00", " ")[:120])
		}
	}
	d.ok("exec", "w1", "--", "true")
}

// TestWarmSnapshotChecked: a create after the first restores the warm
// snapshot the first built; a snapshot damaged on disk (its device state
// cut short) is refused by its manifest check before use: the create boots
// cold, and the snapshot is removed to be built again.
func TestWarmSnapshotChecked(t *testing.T) {
	d := newDaemon(t, "qemu")
	d.ok("create", "w1")
	tpl := filepath.Join(d.dir, "data", "pool", "templates")
	var snap string
	waitFor(t, 3*time.Minute, "the warm snapshot", func() bool {
		m, _ := filepath.Glob(filepath.Join(tpl, "qemu-*", "manifest.json"))
		for _, f := range m {
			if !strings.Contains(f, ".tmp-") {
				snap = filepath.Dir(f)
				return true
			}
		}
		return false
	})
	origin := func(name string) string {
		var s struct{ Origin string }
		json.Unmarshal([]byte(d.ok("info", name, "--json")), &s)
		return s.Origin
	}
	d.ok("create", "w2")
	if o := origin("w2"); o != "warm-snapshot" {
		t.Errorf("second create: origin %q, want warm-snapshot", o)
	}
	if err := os.Truncate(filepath.Join(snap, "state", "device"), 100); err != nil {
		t.Fatal(err)
	}
	d.ok("create", "w3")
	if o := origin("w3"); o != "boot" {
		t.Errorf("create from a damaged snapshot: origin %q, want boot", o)
	}
	if b, err := os.ReadFile(filepath.Join(snap, "state", "device")); err == nil && len(b) == 100 {
		t.Error("the damaged snapshot is still there")
	}
	d.ok("exec", "w3", "--", "true")
}
