package sprite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wisp-sh/wisp/internal/storage"
)

// A sprite's disk is its image grown to the sprite's size, the filesystem
// resized to fill it. The resize costs 50-100 ms on a dev image, most of a
// gVisor create; so the first create of each (image build, size) makes a
// sized base disk under DataDir/disks, and every create after clones it (a
// reflink: milliseconds). A base disk is never booted, only cloned; bases
// of older builds of an image are removed when a new one is made.

func (m *Manager) disksDir() string { return filepath.Join(m.opt.DataDir, "disks") }

// baseDisk returns the sized base disk of root (the image called img) at
// gib GiB, making it first if need be.
func (m *Manager) baseDisk(ctx context.Context, img, root string, gib int) (string, error) {
	h := sha256.Sum256([]byte(root))
	prefix := img + "-" + hex.EncodeToString(h[:6]) + "-"
	p := filepath.Join(m.disksDir(), fmt.Sprintf("%s%dG.img", prefix, gib))
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(m.disksDir(), 0o700); err != nil {
		return "", err
	}
	tmp := p + ".tmp-" + randHex(4)
	if err := storage.CreateDisk(ctx, root, tmp, gib); err != nil {
		return "", err
	}
	if err := storage.SyncFiles(filepath.Dir(tmp)); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := storage.RenameDurable(tmp, p); err != nil {
		os.Remove(tmp)
		return "", err
	}
	// Bases of other builds of this image are stale now.
	old, _ := filepath.Glob(filepath.Join(m.disksDir(), img+"-*.img"))
	for _, o := range old {
		if !strings.HasPrefix(filepath.Base(o), prefix) {
			os.Remove(o)
		}
	}
	return p, nil
}

// createDisk makes the disk of a new sprite of image img at dst.
func (m *Manager) createDisk(ctx context.Context, img, root, dst string, gib int) error {
	base, err := m.baseDisk(ctx, img, root, gib)
	if err != nil {
		return err
	}
	return m.opt.Clone(base, dst)
}

// cleanDisks removes what a crash left of making base disks.
func (m *Manager) cleanDisks() {
	tmps, _ := filepath.Glob(filepath.Join(m.disksDir(), "*.tmp-*"))
	for _, t := range tmps {
		os.Remove(t)
	}
}

// ForgetImage removes the base disks of image img, after the image was
// rebuilt, replaced or removed: they would keep its old blocks in the pool.
func (m *Manager) ForgetImage(img string) {
	m.diskMu.Lock()
	defer m.diskMu.Unlock()
	old, _ := filepath.Glob(filepath.Join(m.disksDir(), img+"-*.img"))
	for _, o := range old {
		os.Remove(o)
	}
}

// BaseDisk returns the sized base disk of image img at gib GiB, the file
// a new sprite's disk is cloned from (made first if need be): what
// another host's copy of a sprite's disk is compared against.
func (m *Manager) BaseDisk(ctx context.Context, img string, gib int) (string, error) {
	root, err := m.opt.Images.Root(img)
	if err != nil {
		return "", err
	}
	return m.baseDisk(ctx, img, root, gib)
}
