package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// TestClient drives one sprite per backend through the public Go SDK over
// the unix socket: exec over the WebSocket (exit codes, stdin and its end,
// 10 MB of output intact, a terminal and its resize, cancellation), files
// over HTTP, and error kinds mapped back.
func TestClient(t *testing.T) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) {
			testClient(t, b, func(d *daemon) *client.Client { return client.New(client.WithSocket(d.sock)) })
		})
	}
}

// testClient runs the SDK's walk on a daemon of backend, reached by the
// client connect makes (the socket, or TCP with a token).
func testClient(t *testing.T, backend string, connect func(*daemon) *client.Client) {
	d := newDaemon(t, backend)
	c := connect(d)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if _, err := c.Sprite("ghost").Info(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("info of a missing sprite: %v, want ErrNotFound", err)
	}
	if err := c.Sprite("ghost").Command("true").Run(); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("exec in a missing sprite: %v, want ErrNotFound", err)
	}
	info, err := c.Create(ctx, api.CreateRequest{Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if info.State != api.StateRunning || info.Backend != backend {
		t.Fatalf("create: %+v", info)
	}
	if _, err := c.Create(ctx, api.CreateRequest{Name: "c1"}); !errors.Is(err, client.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	sp := c.Sprite("c1")

	// Exit codes.
	for _, tc := range []struct {
		argv []string
		code int
	}{{[]string{"true"}, 0}, {[]string{"sh", "-c", "exit 3"}, 3}, {[]string{"sh", "-c", "kill -9 $$"}, 137}, {[]string{"no-such-cmd"}, 127}} {
		cmd := sp.CommandContext(ctx, tc.argv[0], tc.argv[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *client.ExitError
		if tc.code == 0 && err != nil || tc.code != 0 && (!errors.As(err, &ee) || ee.Code != tc.code) || cmd.ExitCode() != tc.code {
			t.Errorf("%q: %v (exit code %d), want %d", tc.argv, err, cmd.ExitCode(), tc.code)
		}
		if tc.code == 127 && !strings.Contains(stderr.String(), "not found") {
			t.Errorf("missing command: stderr %q", stderr.String())
		}
		if cmd.SessionID() == "" {
			t.Errorf("%q: no session id", tc.argv)
		}
	}
	// Env, dir, stdout and stderr apart.
	cmd := sp.CommandContext(ctx, "sh", "-c", `echo "$A"; pwd; echo err >&2`)
	cmd.Env, cmd.Dir = []string{"A=b c"}, "/tmp"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil || string(out) != "b c\n/tmp\n" || stderr.String() != "err\n" {
		t.Errorf("env/dir/stderr: %q %q %v", out, stderr.String(), err)
	}
	// Stdin to its end: 3 MB through sha256sum.
	in := make([]byte, 3<<20)
	rand.Read(in)
	cmd = sp.CommandContext(ctx, "sha256sum")
	cmd.Stdin = bytes.NewReader(in)
	if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), sha(in)) {
		t.Errorf("stdin: %q %v, want %s", out, err, sha(in))
	}
	// A pipe: the program reads until the client closes it.
	cmd = sp.CommandContext(ctx, "wc", "-c")
	w, _ := cmd.StdinPipe()
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "hello\n")
	w.Close()
	if err := cmd.Wait(); err != nil || strings.TrimSpace(out.String()) != "6" {
		t.Errorf("stdin pipe: %q %v", out.String(), err)
	}
	// No stdin: the program sees its end at once.
	if out, err := sp.CommandContext(ctx, "cat").Output(); err != nil || len(out) != 0 {
		t.Errorf("cat with no stdin: %q %v", out, err)
	}
	// 10 MB of output, intact.
	sum, err := sp.CommandContext(ctx, "sh", "-c", "head -c 10000000 /dev/urandom > /tmp/big; sha256sum /tmp/big").Output()
	if err != nil {
		t.Fatal(err)
	}
	big, err := sp.CommandContext(ctx, "cat", "/tmp/big").Output()
	if err != nil || len(big) != 10000000 || sha(big) != strings.Fields(string(sum))[0] {
		t.Errorf("10 MB output: %d bytes, %v", len(big), err)
	}
	// A terminal of the size asked for, then resized.
	cmd = sp.CommandContext(ctx, "sh", "-c", "stty size; read x; stty size")
	cmd.TTY, cmd.Cols, cmd.Rows = true, 80, 24
	w, _ = cmd.StdinPipe()
	var tout syncBuf
	cmd.Stdout = &tout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "stty size 24 80", func() bool { return strings.Contains(tout.String(), "24 80") })
	if err := cmd.Resize(132, 50); err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "\n")
	if err := cmd.Wait(); err != nil || !strings.Contains(tout.String(), "50 132") {
		t.Errorf("tty resize: %q %v", tout.String(), err)
	}
	// Cancelling the context ends the program.
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	t0 := time.Now()
	err = sp.CommandContext(cctx, "sleep", "600").Run()
	ccancel()
	if err == nil || time.Since(t0) > time.Minute {
		t.Errorf("cancelled exec: %v after %s", err, time.Since(t0))
	}

	// Files.
	data := make([]byte, 5<<20)
	rand.Read(data)
	if err := sp.Mkdir(ctx, "/home/sprite/d/e", 0, true); err != nil {
		t.Fatal(err)
	}
	if err := sp.WriteFile(ctx, "/home/sprite/d/e/f.bin", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := sp.ReadFile(ctx, "/home/sprite/d/e/f.bin"); err != nil || sha(got) != sha(data) {
		t.Errorf("read back: %d bytes, %v", len(got), err)
	}
	if fi, err := sp.Stat(ctx, "/home/sprite/d/e/f.bin"); err != nil || fi.Size != int64(len(data)) || fi.Mode.Perm() != 0o600 || fi.IsDir {
		t.Errorf("stat: %+v %v", fi, err)
	}
	if owner, _ := sp.CommandContext(ctx, "stat", "-c", "%U", "/home/sprite/d/e/f.bin").Output(); strings.TrimSpace(string(owner)) != "sprite" {
		t.Errorf("owner of a written file: %q", owner)
	}
	if _, err := sp.ReadFile(ctx, "/no/such"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("read of a missing file: %v, want ErrNotFound", err)
	}
	if _, err := sp.ReadFile(ctx, "/home/sprite/d"); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("read of a directory: %v, want ErrInvalid", err)
	}
	// A tree out as tar, and in again elsewhere.
	rc, err := sp.CopyOut(ctx, "/home/sprite/d")
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for tr := tar.NewReader(bytes.NewReader(tarball)); ; {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if !strings.Contains(strings.Join(names, " "), "d/e/f.bin") {
		t.Errorf("tar out: %q", names)
	}
	if err := sp.Mkdir(ctx, "/tmp/in", 0o755, false); err != nil {
		t.Fatal(err)
	}
	if err := sp.CopyIn(ctx, "/tmp/in", bytes.NewReader(tarball)); err != nil {
		t.Fatal(err)
	}
	if got, err := sp.ReadFile(ctx, "/tmp/in/d/e/f.bin"); err != nil || sha(got) != sha(data) {
		t.Errorf("tar round trip: %d bytes, %v", len(got), err)
	}
	files, _, err := sp.ReadDir(ctx, "/tmp/in/d/e")
	if err != nil || len(files) != 1 || files[0].Name != "f.bin" {
		t.Errorf("readdir: %+v %v", files, err)
	}
	if err := sp.Remove(ctx, "/tmp/in", true); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Stat(ctx, "/tmp/in"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("stat after remove: %v", err)
	}

	// Checkpoint, restore, fork.
	ck, err := sp.Checkpoint(ctx, api.CheckpointRequest{Comment: "sdk"})
	if err != nil {
		t.Fatal(err)
	}
	sp.WriteFile(ctx, "/home/sprite/later", []byte("x"), 0)
	if _, err := sp.Restore(ctx, ck.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Stat(ctx, "/home/sprite/later"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("a file made after the checkpoint survived its restore: %v", err)
	}
	if _, err := sp.Fork(ctx, "c2", ck.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Sprite("c2").ReadFile(ctx, "/home/sprite/d/e/f.bin"); err != nil || sha(got) != sha(data) {
		t.Errorf("file in the fork: %d bytes, %v", len(got), err)
	}
	if err := c.Sprite("c2").Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := c.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "c1" {
		t.Errorf("list: %+v %v", list, err)
	}
}

// syncBuf is a buffer written by one goroutine and read by another.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDoctorWithoutDaemon: with no daemon on the socket, `wisp doctor`
// (which links nothing of the daemon) shows this host's report from
// `wispd --doctor`, and says the daemon is not running.
func TestDoctorWithoutDaemon(t *testing.T) {
	cmd := exec.Command(filepath.Join(binDir, "wisp"), "doctor")
	cmd.Env = append(os.Environ(), "WISP_SOCKET="+filepath.Join(t.TempDir(), "none.sock"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("wisp doctor: %v\n%s%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "daemon:          not running") || !strings.Contains(out.String(), "hardware KVM:") || !strings.Contains(errb.String(), "wispd is not running") {
		t.Errorf("wisp doctor without a daemon: stdout %q, stderr %q", out.String(), errb.String())
	}
}
