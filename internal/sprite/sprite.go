// Package sprite is the domain: what a sprite is, the states it moves
// through, and the Manager that creates, runs and destroys sprites.
package sprite

import (
	"fmt"
	"regexp"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// State is where a sprite is in its life.
type State string

const (
	Creating   State = "creating"   // being made; removed again if the daemon dies now
	Starting   State = "starting"   // its VM is booting
	Running    State = "running"    // its VM runs and its agent answers
	Stopping   State = "stopping"   // its VM is being shut down
	Stopped    State = "stopped"    // no VM; the disk holds everything
	Destroying State = "destroying" // being removed; finished if the daemon dies now
)

// transitions lists, for each state, the states it may move to.
var transitions = map[State][]State{
	Creating:   {Running, Destroying},
	Starting:   {Running, Stopped},
	Running:    {Stopping, Stopped, Destroying},
	Stopping:   {Stopped},
	Stopped:    {Starting, Destroying},
	Destroying: {},
}

// CanMove reports whether from -> to is allowed.
func CanMove(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Sprite is the persisted record of one sprite.
type Sprite struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	State     State     `json:"state"`
	Backend   string    `json:"backend"`
	Accel     string    `json:"accel"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	DiskGiB   int       `json:"disk_gib"`
	Image     string    `json:"image"`
	MAC       string    `json:"mac"`
	Pid       int       `json:"pid,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	StartedAt time.Time `json:"started_at,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	// DiskUsedBytes is filled in when the sprite is shown, not stored.
	DiskUsedBytes int64 `json:"disk_used_bytes,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// ValidateName checks a sprite name: a hostname label of 1 to 32 lower-case
// letters, digits and inner hyphens.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return errdefs.WithHint(fmt.Errorf("invalid sprite name %q: %w", name, errdefs.ErrInvalid),
			"use 1-32 lower-case letters, digits and hyphens, starting and ending with a letter or digit")
	}
	return nil
}

// stateError is the error of a guard that refused an operation.
func stateError(op string, s Sprite) error {
	return fmt.Errorf("cannot %s sprite %q in state %s: %w", op, s.Name, s.State, errdefs.ErrState)
}
