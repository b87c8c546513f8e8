package blob

import "github.com/wisp-sh/wisp/internal/errdefs"

// ErrConflict is the kind of a conditional write that lost: PutIfAbsent on
// a key that exists, Publish of a generation already published.
var ErrConflict = errdefs.ErrConflict

// Log keys.
const (
	logSprite     = "sprite"
	logGeneration = "generation"
	logStats      = "stats"
)
