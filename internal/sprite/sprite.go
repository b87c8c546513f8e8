// Package sprite is the domain: what a sprite is, the states it moves
// through, and the Manager that creates, runs and destroys sprites.
package sprite

import (
	"fmt"
	"regexp"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/vmm"
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
	Suspending State = "suspending" // its memory and device state are being saved
	Sleeping   State = "sleeping"   // no VM process; memory and device state on disk
	Waking     State = "waking"     // being restored from its sleep state
	Restoring  State = "restoring"  // its disk (and memory) are being replaced by a checkpoint's
)

// transitions lists, for each state, the states it may move to. Manager
// persist, the one writer of records, refuses any other move.
var transitions = map[State][]State{
	Creating:   {Running, Destroying},
	Starting:   {Running, Stopped},
	Running:    {Stopping, Stopped, Destroying, Suspending, Restoring},
	Stopping:   {Stopped},
	Stopped:    {Starting, Destroying, Restoring},
	Suspending: {Sleeping, Running, Stopped},
	Sleeping:   {Waking, Stopped, Destroying, Restoring},
	// Waking -> Sleeping: a daemon that died during a wake leaves the
	// sleep state whole (a wake removes it only once the sprite runs),
	// so recovery puts the sprite back to sleep rather than lose its
	// processes.
	Waking:     {Running, Stopped, Sleeping},
	Restoring:  {Running, Stopped},
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

// Op is something done to a sprite that its state may forbid.
type Op string

const (
	OpStart            Op = "start"      // a running sprite: nothing to do; a sleeping one wakes
	OpStop             Op = "stop"       // a stopped sprite: nothing to do
	OpDestroy          Op = "destroy"    //
	OpUse              Op = "use"        // exec, console, cp, files, services, URL: wakes or starts; a change under way is waited for
	OpSleep            Op = "sleep"      // a sleeping sprite: nothing to do
	OpCheckpoint       Op = "checkpoint" // the disk
	OpMemoryCheckpoint Op = "take a memory checkpoint of"
	OpDeleteCheckpoint Op = "delete a checkpoint of"
	OpRestore          Op = "restore"
	OpFork             Op = "fork"
	OpSaveDisk         Op = "save the disk of" // wisp image save
	OpSetPolicy        Op = "set the policy of"
	OpEditSecrets      Op = "change the secrets of"
)

// Ops lists every Op.
var Ops = []Op{OpStart, OpStop, OpDestroy, OpUse, OpSleep, OpCheckpoint, OpMemoryCheckpoint,
	OpDeleteCheckpoint, OpRestore, OpFork, OpSaveDisk, OpSetPolicy, OpEditSecrets}

// States lists every State.
var States = []State{Creating, Starting, Running, Stopping, Stopped, Destroying, Suspending, Sleeping, Waking, Restoring}

// settled are the states a sprite rests in; the others last only while an
// operation holds the sprite (or until recovery, after a crash).
var settled = []State{Running, Stopped, Sleeping}

// allowed says in which states each Op may be done. An Op waits for the
// operation under way on the sprite first, so it meets a passing state
// only after a crash, before recovery.
var allowed = map[Op][]State{
	OpStart:            settled,
	OpStop:             settled,
	OpDestroy:          settled,
	OpUse:              {Running, Stopped, Sleeping, Starting, Stopping, Suspending, Waking, Restoring},
	OpSleep:            {Running, Sleeping},
	OpCheckpoint:       settled,
	OpMemoryCheckpoint: {Running, Sleeping}, // a sleeping sprite is woken first
	OpDeleteCheckpoint: settled,
	OpRestore:          settled,
	OpFork:             settled,
	OpSaveDisk:         settled,
	OpSetPolicy:        settled,
	OpEditSecrets:      settled,
}

// Allows reports whether op may be done to a sprite in state s.
func Allows(s State, op Op) bool {
	for _, a := range allowed[op] {
		if a == s {
			return true
		}
	}
	return false
}

// guard fails with a state error unless op may be done to s.
func guard(op Op, s Sprite) error {
	if Allows(s.State, op) {
		return nil
	}
	return stateError(string(op), s)
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
	MachineID string    `json:"machine_id"`
	// Pids is the sprite's process limit; 0 (records made before it
	// existed) means vmm.DefaultPids.
	Pids int `json:"pids,omitempty"`
	// HostUID is the host user (and group) the sprite's VMM runs as, its
	// own (see UIDRange); 0: the backend's default.
	HostUID int `json:"host_uid,omitempty"`
	// Origin says how the sprite was made: "boot", "warm-snapshot" or
	// "fork of NAME".
	Origin string `json:"origin,omitempty"`
	// Env is KEY=VALUE added to the environment of every exec and
	// console (secrets are kept apart, see secrets.go).
	Env []string `json:"env,omitempty"`
	// IdleSeconds is how long the sprite may sit unused before it sleeps:
	// 0 means the daemon's default, -1 never.
	IdleSeconds int       `json:"idle_seconds"`
	SleptAt     time.Time `json:"slept_at,omitzero"`
	// SleptBoot is the host's boot ID when the sprite went to sleep;
	// SleepSynced says its folder (memory, device state, disk) has reached
	// stable storage since. Until then the sleep state lives partly in
	// the host's page cache, and a host that restarted may have lost it.
	SleptBoot      string       `json:"slept_boot,omitempty"`
	SleepSynced    bool         `json:"sleep_synced,omitempty"`
	Checkpoints    []Checkpoint `json:"checkpoints,omitempty"`
	NextCheckpoint int          `json:"next_checkpoint"`
	// Address is the sprite's own IPv4 address (its gateway, the host's
	// end, is the one before it); empty: no network.
	Address string `json:"address,omitempty"`
	// Policy is the sprite's egress policy.
	Policy network.Policy `json:"policy"`
	// URLPublic: the sprite's URL on the front door answers anyone, not
	// only requests with a credential.
	URLPublic bool `json:"url_public"`
	// Pending is a size asked for while the sprite ran or slept: it takes
	// it at its next cold boot (see Resize).
	Pending *Size `json:"pending,omitempty"`
	// Services are the long-running processes its agent supervises.
	Services []Service `json:"services,omitempty"`
	// DiskUsedBytes and the network counters are filled in when the
	// sprite is shown, not stored.
	DiskUsedBytes int64  `json:"disk_used_bytes,omitempty"`
	NetRxBytes    uint64 `json:"net_rx_bytes,omitempty"`
	NetTxBytes    uint64 `json:"net_tx_bytes,omitempty"`
	// Confinement is what confines its running VMM or sandbox now, as
	// the kernel reports it; filled in by Get, not stored.
	Confinement *vmm.Confinement `json:"confinement,omitempty"`
	// LastWake is how its last wake on this daemon went; filled in by
	// Get, not stored.
	LastWake *WakeTimes `json:"last_wake,omitempty"`
}

// WakeTimes is how a wake went: Total from its start until the sprite ran
// with its agent answering, and the backend's split of it (vmm.WakeSplit:
// restore, handshake, whether the agent session was kept).
type WakeTimes struct {
	At    time.Time     `json:"at"`
	Total time.Duration `json:"total"`
	vmm.WakeSplit
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

// Checkpoint is a saved state of a sprite's disk (and, with Memory, of its
// RAM and devices).
type Checkpoint struct {
	ID        string    `json:"id"` // v1, v2, ... per sprite, never reused
	CreatedAt time.Time `json:"created_at"`
	Comment   string    `json:"comment,omitempty"`
	Memory    bool      `json:"memory"`
	// SizeBytes is filled in when shown: the blocks its files hold.
	SizeBytes int64 `json:"size_bytes,omitempty"`
}

// checkpoint returns the checkpoint id of s.
func (s Sprite) checkpoint(id string) (Checkpoint, bool) {
	for _, c := range s.Checkpoints {
		if c.ID == id {
			return c, true
		}
	}
	return Checkpoint{}, false
}
