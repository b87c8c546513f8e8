// Package imagetest prepares the real kernel, initramfs and root images that
// tests boot, once per machine: they are cached under WISP_TEST_CACHE
// (default: the user cache dir), guarded by a file lock so parallel test
// packages share one build.
package imagetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/image"
)

// Fixture is what a sprite boots from.
type Fixture struct {
	Kernel image.Kernel
	Initrd string // initramfs with the freshly built agent
	Agent  string // the agent binary
	Root   string // the minimal root image
	Store  *image.Store
}

// CacheDir is where test images are kept between runs.
func CacheDir() string {
	if d := os.Getenv("WISP_TEST_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "wisp-test")
}

// Need returns the fixture, building what is missing. It skips the test
// only when the host lacks the tools to build images at all.
func Need(t testing.TB) Fixture {
	t.Helper()
	for _, tool := range []string{"apt-get", "dpkg-deb", "mkfs.ext4", "lz4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (run `make deps`): cannot build guest images", tool)
		}
	}
	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock := flock(t, filepath.Join(dir, "lock"))
	defer unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	agentBin := buildAgent(t, dir)
	st := store(dir)
	k, err := st.Kernel(ctx, io.Discard)
	if err != nil {
		t.Fatalf("kernel: %v", err)
	}
	initrd, err := st.Initramfs(ctx, k, agentBin)
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	root, err := st.Root("minimal")
	if err != nil {
		if _, err := st.Build(ctx, "minimal", nil); err != nil {
			t.Fatalf("build minimal: %v", err)
		}
		if root, err = st.Root("minimal"); err != nil {
			t.Fatal(err)
		}
	}
	return Fixture{Kernel: k, Initrd: initrd, Agent: agentBin, Root: root, Store: st}
}

// store is the test cache's image store. Its downloads are wispd's own
// cache (~/.cache/wisp/downloads): pinned and verified, so shared.
func store(dir string) *image.Store {
	cache := filepath.Join(dir, "downloads")
	if d, err := os.UserCacheDir(); err == nil {
		cache = filepath.Join(d, "wisp", "downloads")
	}
	return &image.Store{Dir: filepath.Join(dir, "images"), Cache: cache, Log: slog.New(slog.DiscardHandler)}
}

// NeedDev returns the path of the dev root image in the shared test cache,
// building it when it is missing or was built from another recipe (about
// three minutes; the downloads are cached too). It skips the test where
// debootstrap is not installed.
func NeedDev(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("debootstrap not installed (run `make deps`): cannot build the dev image")
	}
	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock := flock(t, filepath.Join(dir, "lock"))
	defer unlock()
	st := store(dir)
	info, err := st.Info("dev")
	if err != nil {
		t.Fatal(err)
	}
	if !info.Built || info.Key != image.RecipeKey("dev") {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		t0 := time.Now()
		if info, err = st.Build(ctx, "dev", nil); err != nil {
			t.Fatalf("build dev: %v", err)
		}
		t.Logf("built the dev image in %s (cached in %s)", time.Since(t0).Round(time.Second), st.Dir)
	}
	return info.Path
}

// buildAgent builds the agent of this module into dir under a name of
// its content (wisp-agent-HASH) and returns its path. A binary is never
// replaced: gVisor sandboxes bind-mount it, and a restore fails when the
// file under a checkpointed sandbox changed (as it did when tests of
// other worktrees rebuilt one shared wisp-agent). Agents unused for a day
// are removed.
func buildAgent(t testing.TB, dir string) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	modDir := filepath.Dir(strings.TrimSpace(string(gomod)))
	tmp := filepath.Join(dir, fmt.Sprintf("wisp-agent.tmp-%d", os.Getpid()))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, "./cmd/wisp-agent")
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, b)
	}
	defer os.Remove(tmp)
	b, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	out := filepath.Join(dir, "wisp-agent-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(out); err != nil {
		if err := os.Rename(tmp, out); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	os.Chtimes(out, now, now)
	old, _ := filepath.Glob(filepath.Join(dir, "wisp-agent-*"))
	for _, p := range old {
		if fi, err := os.Stat(p); err == nil && p != out && now.Sub(fi.ModTime()) > 24*time.Hour {
			os.Remove(p)
		}
	}
	return out
}

func flock(t testing.TB, path string) func() {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }
}
