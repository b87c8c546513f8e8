package blob

import "github.com/wisp-sh/wisp/internal/errdefs"

// ErrConflict is the kind of a conditional write that lost: PutIfAbsent on
// a key that exists, Publish of a generation already published.
//
// Merge note: main's errdefs has gained ErrConflict since this branch was
// cut; once merged, this becomes `var ErrConflict = errdefs.ErrConflict`,
// the only change needed (blob and its tests use this name).
var ErrConflict = errdefs.ErrExists

// Log keys.
const (
	logSprite     = "sprite"
	logGeneration = "generation"
	logStats      = "stats"
)
