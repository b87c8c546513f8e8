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
)

// Kind returns the sentinel err wraps, or nil.
func Kind(err error) error {
	for _, k := range []error{ErrNotFound, ErrExists, ErrInvalid, ErrState, ErrUnavailable, ErrNoSpace} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
