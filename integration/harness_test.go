// Package integration drives the real wispd and wisp binaries against real
// sprites: QEMU microVMs (TCG where there is no hardware KVM) and gVisor
// sandboxes where runsc is installed.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/image/imagetest"
)

var binDir string

func TestMain(m *testing.M) {
	binDir = os.Getenv("WISP_BIN")
	if binDir == "" {
		tmp, err := os.MkdirTemp("", "wisp-bin")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(tmp)
		for _, b := range []struct{ name, cgo string }{{"wisp-agent", "0"}, {"wispd", ""}, {"wisp", ""}} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(tmp, b.name), "../cmd/"+b.name)
			cmd.Env = os.Environ()
			if b.cgo != "" {
				cmd.Env = append(cmd.Env, "CGO_ENABLED="+b.cgo)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.name, err, out)
				os.Exit(1)
			}
		}
		binDir = tmp
	}
	os.Exit(m.Run())
}

// daemon is one wispd on a data dir of its own.
type daemon struct {
	t       *testing.T
	dir     string
	sock    string
	backend string
	cmd     *exec.Cmd
	logf    *os.File
	images  string   // the shared test image cache
	pool    int      // pool size in GiB
	args    []string // more wispd flags
	// defaults: start wispd with no layout flags (no --images, --pool-size,
	// --build-dir, --cache, default image or disk): only its own data dir
	// and socket, as a user would.
	defaults bool
	uidRange string   // --vmm-uids (see uids)
	env      []string // more environment for wispd (KEY=VALUE)
}

// newDaemon starts wispd with a fresh data dir whose images come from the
// shared test cache (so each test does not fetch the kernel again).
func newDaemon(t *testing.T, backend string, args ...string) *daemon {
	t.Helper()
	return startDaemon(t, &daemon{backend: backend, pool: 4, args: args})
}

// newDefaultDaemon starts wispd as a user would: its data dir and socket
// (temporary, for the test) and no layout flags; images are built and
// kept where wispd's defaults put them.
func newDefaultDaemon(t *testing.T, backend string, args ...string) *daemon {
	t.Helper()
	return startDaemon(t, &daemon{backend: backend, args: args, defaults: true})
}

func startDaemon(t *testing.T, d *daemon) *daemon {
	t.Helper()
	if testing.Short() {
		t.Skip("boots real sprites; skipped with -short")
	}
	if os.Getuid() != 0 {
		t.Skip("wispd needs root here (loop mounts, cgroups)")
	}
	fx := imagetest.Need(t)
	dir, err := os.MkdirTemp("", "wi")
	if err != nil {
		t.Fatal(err)
	}
	d.t, d.dir, d.sock = t, dir, filepath.Join(dir, "wisp.sock")
	d.images = fx.Store.Dir
	d.logf, _ = os.Create(filepath.Join(dir, "wispd.log"))
	d.start()
	t.Cleanup(func() {
		// Destroy whatever is left so no VM outlives the test.
		out, _, _ := d.wisp(nil, "list", "--json")
		var list []struct{ Name string }
		json.Unmarshal([]byte(out), &list)
		for _, s := range list {
			d.wisp(nil, "destroy", s.Name)
		}
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(d.logf.Name())
			t.Logf("wispd log:\n%s", log)
		}
		unmountUnder(dir) // runsc's shared network-namespace mount
		os.RemoveAll(dir)
	})
	return d
}

// uidBlocks counts the uid blocks this test process handed out.
var uidBlocks atomic.Int32

// uids returns this daemon's --vmm-uids: a block of 512 of its own (kept
// across its restarts), per test process and daemon.
func (d *daemon) uids() string {
	if d.uidRange == "" {
		first := 2100000000 + ((os.Getpid()%1000)*64+int(uidBlocks.Add(1))%64)*512
		d.uidRange = fmt.Sprintf("%d-%d", first, first+511)
	}
	return d.uidRange
}

func (d *daemon) start() {
	d.t.Helper()
	d.cmd = exec.Command(filepath.Join(binDir, "wispd"), "--data-dir", filepath.Join(d.dir, "data"), "--socket", d.sock,
		"--backend", d.backend, "--default-memory", "256", "--allow-tcg",
		"--idle", "0s", // no sprite sleeps behind a test's back; TestSleep sets idle times per sprite
		// Networks of their own, apart from a real wispd's.
		"--net-name", testNetName, "--net-cidr", testNetCIDR.String())
	if !d.defaults {
		d.cmd.Args = append(d.cmd.Args, "--default-image", "minimal", "--default-disk", "2",
			"--images", d.images, "--pool-size", fmt.Sprint(d.pool))
	}
	if !slices.Contains(d.args, "--dns-upstream") {
		// Sprites' DNS goes nowhere but loopback (nothing answers there).
		d.cmd.Args = append(d.cmd.Args, "--dns-upstream", "127.0.0.1:9")
	}
	if !slices.Contains(d.args, "--vmm-uids") {
		// Host uids of its own, apart from a real wispd's and from the
		// other daemons of this and other test processes.
		d.cmd.Args = append(d.cmd.Args, "--vmm-uids", d.uids())
	}
	if !slices.Contains(d.args, "--http-addr") {
		// A front door on a port of its own, not a real wispd's 7780
		// (`wisp url` says which).
		d.cmd.Args = append(d.cmd.Args, "--http-addr", "127.0.0.1:0")
	}
	if !slices.Contains(d.args, "--listen") {
		// The API over TCP on a port of its own, not a real wispd's
		// 7781 (GET /v1/version says which).
		d.cmd.Args = append(d.cmd.Args, "--listen", "127.0.0.1:0")
	}
	d.cmd.Args = append(d.cmd.Args, d.args...)
	d.cmd.Stdout, d.cmd.Stderr = d.logf, d.logf
	if d.env != nil {
		d.cmd.Env = append(os.Environ(), d.env...)
	}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	// Wait until the socket exists, then for a first answer: wispd listens
	// before it recovers its sprites and serves only after.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			d.ok("list")
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(d.logf.Name())
			d.t.Fatalf("wispd did not come up:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill9 kills the daemon the hard way and starts a new one on the same dir.
func (d *daemon) kill9AndRestart() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	d.start()
}

// wisp runs the CLI and returns stdout, stderr and the exit code.
func (d *daemon) wisp(stdin []byte, args ...string) (string, string, int) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "wisp"), args...)
	cmd.Env = append(os.Environ(), "WISP_SOCKET="+d.sock)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("wisp %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs the CLI and fails the test unless it exits 0.
func (d *daemon) ok(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.wisp(nil, args...)
	if code != 0 {
		d.t.Fatalf("wisp %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs the CLI, wants a non-zero exit and a message containing want.
func (d *daemon) fails(want string, args ...string) {
	d.t.Helper()
	out, errOut, code := d.wisp(nil, args...)
	if code == 0 || !strings.Contains(errOut, want) {
		d.t.Errorf("wisp %s: exit %d, stderr %q; want failure mentioning %q (stdout %q)", strings.Join(args, " "), code, errOut, want, out)
	}
}

type spriteJSON struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	Backend   string `json:"backend"`
	Accel     string `json:"accel"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	DiskGiB   int    `json:"disk_gib"`
	Pids      int    `json:"pids"`
	Pid       int    `json:"pid"`
	CreatedAt string `json:"created_at"`
	// SleepSynced: the sleep state has reached stable storage.
	SleepSynced bool `json:"sleep_synced"`
	LastWake    *struct {
		At          time.Time `json:"at"`
		TotalMs     float64   `json:"total_ms"`
		RestoreMs   float64   `json:"restore_ms"`
		HandshakeMs float64   `json:"handshake_ms"`
		KeptSession bool      `json:"kept_session"`
	} `json:"last_wake"`
}

func (d *daemon) info(name string) spriteJSON {
	d.t.Helper()
	var s spriteJSON
	if err := json.Unmarshal([]byte(d.ok("info", name, "--json")), &s); err != nil {
		d.t.Fatal(err)
	}
	return s
}

func (d *daemon) list() []spriteJSON {
	d.t.Helper()
	var l []spriteJSON
	if err := json.Unmarshal([]byte(d.ok("list", "--json")), &l); err != nil {
		d.t.Fatal(err)
	}
	return l
}

// backends are the isolation backends this host runs.
func backends() []string {
	b := []string{"qemu"}
	if _, err := os.Stat("/usr/local/libexec/wisp/runsc"); err == nil || os.Getenv("WISP_RUNSC") != "" {
		b = append(b, "gvisor")
	}
	return b
}

// unmountUnder detaches every mount below dir.
func unmountUnder(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
