package sprite

import (
	"errors"
	"fmt"
)

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
