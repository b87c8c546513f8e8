package api

import (
	"strings"
	"time"
)

// Sprite states, as Sprite.State reports them.
const (
	StateCreating   = "creating"
	StateStarting   = "starting"
	StateRunning    = "running"
	StateStopping   = "stopping"
	StateStopped    = "stopped"
	StateDestroying = "destroying"
	StateSuspending = "suspending"
	StateSleeping   = "sleeping"
	StateWaking     = "waking"
	StateRestoring  = "restoring"
)

// Sprite is one sprite as the API shows it: GET /v1/sprites/{name}, and
// the answer of every call that changes a sprite.
type Sprite struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	State     string    `json:"state"` // a State constant
	Backend   string    `json:"backend"`
	Accel     string    `json:"accel"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	DiskGiB   int       `json:"disk_gib"`
	Image     string    `json:"image"`
	MAC       string    `json:"mac,omitempty"`
	Pid       int       `json:"pid,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	StartedAt time.Time `json:"started_at,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	MachineID string    `json:"machine_id,omitempty"`
	Pids      int       `json:"pids,omitempty"`   // the process limit
	Origin    string    `json:"origin,omitempty"` // "boot", "warm-snapshot", "fork of NAME"
	Env       []string  `json:"env,omitempty"`    // KEY=VALUE for every exec
	// IdleSeconds: 0 the daemon's default, -1 never sleeps.
	IdleSeconds int       `json:"idle_seconds"`
	SleptAt     time.Time `json:"slept_at,omitzero"`
	// SleepSynced says the sleep state has reached stable storage.
	SleepSynced bool         `json:"sleep_synced,omitempty"`
	Checkpoints []Checkpoint `json:"checkpoints,omitempty"`
	Address     string       `json:"address,omitempty"` // its IPv4 address; empty: no network
	Policy      Policy       `json:"policy"`
	URLPublic   bool         `json:"url_public"`
	Services    []Service    `json:"services,omitempty"`

	DiskUsedBytes int64  `json:"disk_used_bytes,omitempty"`
	NetRxBytes    uint64 `json:"net_rx_bytes,omitempty"`
	NetTxBytes    uint64 `json:"net_tx_bytes,omitempty"`

	// Pending is a size asked for while it ran or slept: it takes it at
	// its next cold boot.
	Pending *Size `json:"pending,omitempty"`
	// Capped says why it is held asleep at its cap ("" it is not).
	Capped string `json:"capped,omitempty"`
	// HostUID is the host user its VMM runs as (0: none of its own, as
	// for a gVisor sandbox); Confinement what confines it while it runs.
	HostUID     int          `json:"host_uid,omitempty"`
	Confinement *Confinement `json:"confinement,omitempty"`

	// In cluster mode: Host is the host that has the sprite now (empty:
	// at rest, on none), Generation the last state it published (0:
	// never).
	Host       string `json:"host,omitempty"`
	Generation uint64 `json:"generation,omitempty"`

	// LastWake is how its last wake on this daemon went (absent: none
	// since the daemon started).
	LastWake *WakeTimes `json:"last_wake,omitempty"`
}

// WakeTimes is how a wake went: TotalMs from its start until the sprite ran
// with its agent answering; of it RestoreMs until the guest ran again (VMM
// start, state load) and HandshakeMs until its agent answered. KeptSession:
// the daemon's agent session from before the sleep went on (no new
// handshake).
type WakeTimes struct {
	At          time.Time `json:"at"`
	TotalMs     float64   `json:"total_ms"`
	RestoreMs   float64   `json:"restore_ms"`
	HandshakeMs float64   `json:"handshake_ms"`
	KeptSession bool      `json:"kept_session"`
}

// Size is a sprite's CPUs, memory and disk; in a request, zero fields
// keep what it has.
type Size struct {
	CPUs      int `json:"cpus,omitempty"`
	MemoryMiB int `json:"memory_mib,omitempty"`
	DiskGiB   int `json:"disk_gib,omitempty"`
}

// CreateRequest is the body of POST /v1/sprites. Zero fields take the
// daemon's defaults.
type CreateRequest struct {
	Name        string   `json:"name"`
	CPUs        int      `json:"cpus,omitempty"`
	MemoryMiB   int      `json:"memory_mib,omitempty"`
	DiskGiB     int      `json:"disk_gib,omitempty"`
	Image       string   `json:"image,omitempty"`
	Backend     string   `json:"backend,omitempty"` // "qemu", "gvisor", "" or "auto"
	Pids        int      `json:"pids,omitempty"`
	IdleSeconds int      `json:"idle_seconds,omitempty"` // -1: never sleep
	Env         []string `json:"env,omitempty"`
	Policy      Policy   `json:"policy,omitzero"` // default: allow-all
}

// UpdateRequest is the body of PATCH /v1/sprites/{name}; absent fields
// stay as they are.
type UpdateRequest struct {
	IdleSeconds *int  `json:"idle_seconds,omitempty"` // 0 the default, -1 never
	URLPublic   *bool `json:"url_public,omitempty"`   // the URL answers anyone (true) or only credentials
	// Size resizes: a stopped sprite at once, a running or sleeping one
	// at its next cold boot (then Sprite.Pending shows it); disks only
	// grow.
	Size *Size `json:"size,omitempty"`
}

// Checkpoint is a saved state of a sprite's disk (and, with Memory, of
// its RAM and devices).
type Checkpoint struct {
	ID        string    `json:"id"` // v1, v2, ... per sprite, never reused
	CreatedAt time.Time `json:"created_at"`
	Comment   string    `json:"comment,omitempty"`
	Memory    bool      `json:"memory"`
	SizeBytes int64     `json:"size_bytes,omitempty"`
}

// CheckpointRequest is the body of POST /v1/sprites/{name}/checkpoints.
type CheckpointRequest struct {
	Comment string `json:"comment,omitempty"`
	Memory  bool   `json:"memory,omitempty"`
}

// RestoreRequest is the body of POST /v1/sprites/{name}/restore.
type RestoreRequest struct {
	ID string `json:"id"`
}

// ForkRequest is the body of POST /v1/sprites/{name}/fork.
type ForkRequest struct {
	Name string `json:"name"`           // the new sprite
	From string `json:"from,omitempty"` // a checkpoint id; empty: the current state
}

// Egress policy modes.
const (
	PolicyAllowAll  = "allow-all"
	PolicyDenyAll   = "deny-all"
	PolicyAllowList = "allowlist"
)

// Policy is a sprite's egress policy: PUT /v1/sprites/{name}/policy takes
// it, GET answers it (with Address).
type Policy struct {
	Mode string `json:"mode"`
	// Allow lists names ("github.com"), wildcards ("*.npmjs.org") and
	// IPv4 CIDRs or addresses (Mode allowlist).
	Allow []string `json:"allow,omitempty"`
	// Address is the sprite's address (answers only).
	Address string `json:"address,omitempty"`
}

// Service is the definition of one long-running process of a sprite:
// POST /v1/sprites/{name}/services takes it.
type Service struct {
	Name      string    `json:"name"`
	Cmd       string    `json:"cmd"`            // run as /bin/sh -c CMD
	Dir       string    `json:"dir,omitempty"`  // default the user's home
	Env       []string  `json:"env,omitempty"`  // KEY=VALUE
	User      string    `json:"user,omitempty"` // default "sprite"
	Port      int       `json:"port,omitempty"` // what it listens on (the sprite's URL serves it)
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// ServiceStatus is a service's definition and, when its sprite runs, its
// state: "running", "backoff", "exited", "unknown", or the sprite's state.
type ServiceStatus struct {
	Service
	State     string    `json:"state"`
	Pid       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	StartedAt time.Time `json:"started_at,omitzero"`
	LastExit  string    `json:"last_exit,omitempty"`
	LogBytes  int64     `json:"log_bytes"` // written in all; the last 256 KiB are kept
	Error     string    `json:"error,omitempty"`
}

// URLRequest is the body of POST /v1/sprites/{name}/url.
type URLRequest struct {
	Port       int  `json:"port,omitempty"`        // default: the first service's port, else 8080
	Signed     bool `json:"signed,omitempty"`      // add a credential
	TTLSeconds int  `json:"ttl_seconds,omitempty"` // of the credential; default 3600
}

// URLInfo is a sprite's URL on the front door.
type URLInfo struct {
	URL       string    `json:"url"`      // the host form where clients resolve *.localhost, else the path form
	PathURL   string    `json:"path_url"` // the path form
	Sprite    string    `json:"sprite"`
	Port      int       `json:"port"`
	Public    bool      `json:"public"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // of the credential in a signed URL
}

// Version is the answer of GET /v1/version.
type Version struct {
	Version string `json:"version"`
	// Listen is where the API also listens over TCP ("" not).
	Listen string `json:"listen,omitempty"`
}

// String is the policy as a person reads it.
func (p Policy) String() string {
	switch p.Mode {
	case PolicyAllowList:
		return "allow " + strings.Join(p.Allow, ",")
	case "":
		return PolicyAllowAll
	}
	return p.Mode
}
