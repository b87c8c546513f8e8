package sprite

import (
	"errors"
	"fmt"
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
