// Package image fetches the guest kernel, builds the initramfs and the root
// images sprites boot from, and caches them under one directory.
//
// Layout under Store.Dir:
//
//	kernel/meta.json            the current kernel (written last, atomically)
//	kernel/<version>/vmlinux    ELF vmlinux cut out of the Debian bzImage
//	kernel/<version>/modules/   the .ko files the guest needs, uncompressed
//	initramfs/initramfs-<hash>.cpio
//	roots/<name>                symlink to roots/.<name>-<id>/ (swapped atomically)
//	roots/.<name>-<id>/root.ext4, meta.json
//	logs/<name>.log             the output of the last build of name
//	tmp/                        work dirs; anything here is garbage after a crash
//
// Root trees are populated under Scratch (debootstrap needs device nodes and
// exec, which the storage pool's mount forbids) and pinned downloads are
// cached under Cache; both may live elsewhere than Dir.
package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/storage"
)

var (
	// ErrNotBuilt means the root image exists by name but has not been built.
	ErrNotBuilt = errors.New("image not built")
	// ErrUnknown means no image has that name (it wraps errdefs.ErrNotFound).
	ErrUnknown = fmt.Errorf("unknown image: %w", errdefs.ErrNotFound)
)

// Store manages the cache under Dir (the daemon passes <data-dir>/images).
// Its methods are safe for concurrent use; the zero value with Dir set works.
type Store struct {
	Dir string
	// Scratch is where root trees are built; it must allow device nodes
	// and exec. Empty means tmp/ under Dir.
	Scratch string
	// Cache holds pinned downloads (Node.js, Go, Claude Code) between
	// builds. Empty means downloads/ under Dir.
	Cache string
	Log   *slog.Logger // never nil in use; log at boundaries only

	mu    sync.Mutex             // guards locks
	locks map[string]*sync.Mutex // one per cache entry ("kernel", "root/dev", ...)
}

// lock serialises work on one cache entry and returns the unlock function.
func (s *Store) lock(key string) func() {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*sync.Mutex{}
	}
	m, ok := s.locks[key]
	if !ok {
		m = new(sync.Mutex)
		s.locks[key] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (s *Store) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// workDir makes a fresh temporary directory under Dir/tmp, on the same
// filesystem as the cache so that results can be renamed into place.
func (s *Store) workDir(prefix string) (string, error) {
	tmp := filepath.Join(s.Dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(tmp, prefix+"-")
}

// writeJSONAtomic writes v as JSON to path (storage.WriteFileAtomic), so
// readers see either the old content or the new, never a torn file.
func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(path, append(b, '\n'), 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// run runs a command and returns its stdout; on failure the error carries
// the command line and the tail of its combined output.
func run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(stderr.String()+stdout.String(), 800))
	}
	return stdout.Bytes(), nil
}

// runStream runs a command, writing each line of its output to progress.
// env nil means the current environment.
func runStream(ctx context.Context, progress io.Writer, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var last []string // kept for the error message
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(progress, sc.Text())
			if last = append(last, sc.Text()); len(last) > 10 {
				last = last[1:]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.Join(last, "\n"))
	}
	return nil
}

// Recipe says how an image of one's own was made: from which image, with
// which commands and copied files, or saved from which sprite.
type Recipe struct {
	From   string   `json:"from"`
	Run    []string `json:"run,omitempty"`
	Copy   []string `json:"copy,omitempty"`   // LOCAL:/path, as given
	Sprite string   `json:"sprite,omitempty"` // saved from this sprite's disk
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
