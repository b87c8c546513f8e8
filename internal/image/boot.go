package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/storage"
)

// Boot supplies sprites with their boot files: the kernel (fetched on first
// use) and an initramfs holding the agent at AgentPath. The result is
// computed once per process; a failure is retried on the next call.
type Boot struct {
	Store     *Store
	AgentPath string
	// Pool, when set, is a folder in the storage pool: a root image kept on
	// another filesystem (wispd --images elsewhere) is cloned into it once,
	// so sprite disks are reflinks of the copy rather than copies each.
	Pool  string
	Clone func(src, dst string) error // a pool clone; required with Pool

	mu             sync.Mutex
	kernel, initrd string
	importMu       sync.Mutex
}

// Root returns the root image of a built image, with an error kind and a
// hint a user can act on.
func (b *Boot) Root(name string) (string, error) {
	p, err := b.Store.Root(name)
	switch {
	case errors.Is(err, ErrUnknown):
		return "", errdefs.WithHint(fmt.Errorf("%w: %w", err, errdefs.ErrInvalid), "see `wisp image list`")
	case errors.Is(err, ErrNotBuilt):
		return "", errdefs.WithHint(fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable), "build it with `wisp image build "+name+"`")
	case err != nil:
		return "", err
	}
	if b.Pool == "" || sameFilesystem(p, b.Pool) {
		return p, nil
	}
	return b.imported(name, p)
}

// imported returns the pool's copy of the root image p, making it first:
// <Pool>/<name>-<build time>.ext4, replacing copies of older builds.
func (b *Boot) imported(name, p string) (string, error) {
	info, err := b.Store.Info(name)
	if err != nil {
		return "", err
	}
	if info.Path != p {
		return "", fmt.Errorf("image %q changed while being imported into the pool: %w", name, errdefs.ErrUnavailable)
	}
	b.importMu.Lock()
	defer b.importMu.Unlock()
	return storage.Current(b.Pool, fmt.Sprintf("%s-%d.ext4", name, info.BuiltAt.UnixNano()), name+"-*.ext4", func(dst string) error {
		if err := b.Clone(p, dst); err != nil {
			return fmt.Errorf("import image %q into the storage pool: %w", name, err)
		}
		return nil
	})
}

// sameFilesystem reports whether a and b are on one filesystem (where a
// reflink from one to the other can work).
func sameFilesystem(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil {
		return false
	}
	if err := os.MkdirAll(b, 0o700); err != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev
}

// Boot returns the kernel and initramfs paths.
func (b *Boot) Boot(ctx context.Context) (string, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kernel != "" {
		return b.kernel, b.initrd, nil
	}
	k, err := b.Store.Kernel(ctx, io.Discard)
	if err != nil {
		return "", "", fmt.Errorf("guest kernel: %w", err)
	}
	initrd, err := b.Store.Initramfs(ctx, k, b.AgentPath)
	if err != nil {
		return "", "", fmt.Errorf("initramfs: %w", err)
	}
	b.kernel, b.initrd = k.Vmlinux, initrd
	return b.kernel, b.initrd, nil
}
