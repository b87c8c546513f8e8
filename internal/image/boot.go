package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Boot supplies sprites with their boot files: the kernel (fetched on first
// use) and an initramfs holding the agent at AgentPath. The result is
// computed once per process; a failure is retried on the next call.
type Boot struct {
	Store     *Store
	AgentPath string

	mu             sync.Mutex
	kernel, initrd string
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
	}
	return p, err
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
