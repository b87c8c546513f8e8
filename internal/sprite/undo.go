package sprite

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// noSpace gives a full filesystem its error kind and a hint.
func noSpace(err error) error {
	if err == nil || !errors.Is(err, syscall.ENOSPC) || errors.Is(err, errdefs.ErrNoSpace) {
		return err
	}
	return errdefs.WithHint(fmt.Errorf("the storage pool is full: %w: %w", err, errdefs.ErrNoSpace),
		"destroy sprites or delete checkpoints, or grow the pool (wispd --pool-size)")
}

// copyFile is the Clone used without a storage pool: a reflink where the
// filesystem has them, else a sparse copy.
func copyFile(src, dst string) error {
	if out, err := exec.Command("cp", "--reflink=auto", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// undoStack records how to take back each step of a bring-up. On failure
// the undos run once, newest first, and their errors are joined.
type undoStack struct {
	names []string
	fns   []func() error
}

func (u *undoStack) push(name string, fn func() error) {
	u.names = append(u.names, name)
	u.fns = append(u.fns, fn)
}

func (u *undoStack) run() error {
	var errs []error
	for i := len(u.fns) - 1; i >= 0; i-- {
		if err := u.fns[i](); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", u.names[i], err))
		}
	}
	u.names, u.fns = nil, nil
	return errors.Join(errs...)
}
