// Package errdefs defines the kinds of error wisp reports. Code wraps them
// with %w and the context a person needs; only package server maps them to
// HTTP status codes.
package errdefs

import "errors"

var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrInvalid     = errors.New("invalid argument")
	ErrState       = errors.New("wrong state")
	ErrUnavailable = errors.New("unavailable")
	ErrNoSpace     = errors.New("no space left")
	// ErrConflict: another party changed or holds the thing meanwhile
	// (another host owns the sprite; a fence or a conditional write lost).
	ErrConflict = errors.New("conflict")
)

// Kind returns the sentinel err wraps, or nil.
func Kind(err error) error {
	for _, k := range []error{ErrNotFound, ErrExists, ErrInvalid, ErrState, ErrUnavailable, ErrNoSpace, ErrConflict} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

// hinted attaches a suggestion for the user to an error.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// WithHint returns err carrying a suggestion of what to do about it.
func WithHint(err error, hint string) error { return &hinted{err, hint} }

// Hint returns the suggestion attached to err, if any.
func Hint(err error) string {
	var h *hinted
	if errors.As(err, &h) {
		return h.hint
	}
	return ""
}
