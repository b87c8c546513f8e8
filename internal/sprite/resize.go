package sprite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Size is a sprite's CPUs, memory and disk; zero fields keep what it has.
type Size struct {
	CPUs      int `json:"cpus,omitempty"`
	MemoryMiB int `json:"memory_mib,omitempty"`
	DiskGiB   int `json:"disk_gib,omitempty"`
}

// Resize changes a sprite's size. A stopped sprite takes it at once (its
// disk grows now). A running or sleeping one keeps its size until its next
// cold boot (`wisp stop` then `wisp start`): a VM's CPUs and RAM, and a
// sleeping sprite's saved memory, are fixed while it lives; the new size
// waits in rec.Pending. Disks only grow. applied says which happened.
func (m *Manager) Resize(ctx context.Context, name string, sz Size) (rec Sprite, applied bool, err error) {
	rec, err = m.change(name, func(e *entry) error {
		r := e.rec
		want := Size{CPUs: r.CPUs, MemoryMiB: r.MemoryMiB, DiskGiB: r.DiskGiB}
		if r.Pending != nil {
			want = *r.Pending
		}
		if sz.CPUs != 0 {
			want.CPUs = sz.CPUs
		}
		if sz.MemoryMiB != 0 {
			want.MemoryMiB = sz.MemoryMiB
		}
		if sz.DiskGiB != 0 {
			want.DiskGiB = sz.DiskGiB
		}
		if err := m.validateSize(r, want); err != nil {
			return err
		}
		switch r.State {
		case Stopped:
			r.Pending = &want
			applied = true
			return m.applySize(ctx, e, r)
		case Running, Sleeping:
			if want == (Size{CPUs: r.CPUs, MemoryMiB: r.MemoryMiB, DiskGiB: r.DiskGiB}) {
				r.Pending = nil
			} else {
				r.Pending = &want
			}
			return m.persist(e, r)
		}
		return stateError("resize", r)
	})
	return rec, applied, err
}

func (m *Manager) validateSize(r Sprite, s Size) error {
	if errs := m.opt.Limits.sizeErrors(s, r.DiskGiB); len(errs) > 0 {
		return fmt.Errorf("resize %s: %w: %w", r.Name, errors.Join(errs...), errdefs.ErrInvalid)
	}
	return nil
}

// sizeErrors says what of s lies outside l; a disk may not be smaller than
// minDisk GiB.
func (l Limits) sizeErrors(s Size, minDisk int) []error {
	var errs []error
	if s.CPUs < 1 || s.CPUs > l.MaxCPUs {
		errs = append(errs, fmt.Errorf("cpus %d out of range 1-%d", s.CPUs, l.MaxCPUs))
	}
	if s.MemoryMiB < 128 || s.MemoryMiB > l.MaxMemoryMiB {
		errs = append(errs, fmt.Errorf("memory %d MiB out of range 128-%d", s.MemoryMiB, l.MaxMemoryMiB))
	}
	if s.DiskGiB < minDisk || s.DiskGiB > l.MaxDiskGiB {
		why := ""
		if minDisk > 1 {
			why = " (disks only grow)"
		}
		errs = append(errs, fmt.Errorf("disk %d GiB out of range %d-%d%s", s.DiskGiB, minDisk, l.MaxDiskGiB, why))
	}
	return errs
}

// applySize gives a sprite with no running instance its pending size,
// under e.op: the disk grows first (idempotent: a crash before the record
// is written grows it again to the same size), then the record says so.
func (m *Manager) applySize(ctx context.Context, e *entry, r Sprite) error {
	p := r.Pending
	if p == nil {
		return nil
	}
	if p.DiskGiB > r.DiskGiB {
		if err := growDisk(ctx, m.DiskPath(r), p.DiskGiB); err != nil {
			return fmt.Errorf("grow the disk of %s to %d GiB: %w", r.Name, p.DiskGiB, err)
		}
	}
	r.CPUs, r.MemoryMiB, r.DiskGiB, r.Pending = p.CPUs, p.MemoryMiB, max(r.DiskGiB, p.DiskGiB), nil
	m.log.Info("sprite resized", LogSprite, r.Name, "cpus", r.CPUs, "memory_mib", r.MemoryMiB, "disk_gib", r.DiskGiB)
	return m.persist(e, r)
}

// growDisk grows the disk file at path to gib GiB and its ext4 filesystem
// to fill it (offline: the sprite is not running).
func growDisk(ctx context.Context, path string, gib int) error {
	if err := os.Truncate(path, int64(gib)<<30); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "resize2fs", "-f", path).CombinedOutput(); err != nil {
		return fmt.Errorf("resize2fs: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
