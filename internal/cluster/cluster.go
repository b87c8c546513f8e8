// Package cluster keeps wisp's hosts, the ownership of sprites and their
// published heads in etcd.
//
// The model, in the order a sprite lives through it:
//
//   - Each host Joins: it grants itself a lease (Config.TTL), keeps it alive,
//     and puts wisp/hosts/<id> (a JSON Host) on it. A second live host with
//     the same id is refused.
//   - A sprite is owned while a host holds it live: wisp/sprites/<name>/owner
//     holds the host id and is bound to that host's lease, so it goes when
//     the host does. Create and Claim put it only if it is absent; the
//     revision of that put is the Fence.
//   - Every change of a sprite at rest, its published head
//     (wisp/sprites/<name>/head, a JSON Head), and its release or deletion,
//     is a transaction that requires the owner key to be the one this Node
//     put under that Fence on its current lease. Anything else is
//     ErrConflict ("fenced: owner changed").
//   - The owner publishes a head, then Releases the owner key; the next user
//     Claims it.
//   - A daemon restarted after a crash, while its previous lease lives,
//     joins with Config.Previous and Reclaims its sprites: their owner keys
//     move to the new lease with their fences.
//   - Self-fencing: when the lease's keep-alives have failed for TTL minus
//     Margin, the Node calls Config.OnLost once (stop the VMs there) before
//     etcd can expire the lease and anyone else can claim. It then refuses
//     Create, Claim and the fenced calls until it has registered again under
//     a new lease, which it does on its own once etcd answers. Its owner keys
//     went with the old lease (it revokes the old lease if etcd still has
//     it), so every Fence it held is void: the sprites must be claimed again.
//
// Keys, under Config.Prefix (default "wisp/"): hosts/<id> (JSON Host, on
// the host's lease), sprites/<name>/owner (host id, on the owner's lease),
// sprites/<name>/head (JSON Head), addrs/<ip> (host id that reserved it; no
// lease) and secret (the cluster's shared secret).
//
// Errors wrap the errdefs kinds: ErrConflict (errdefs.ErrConflict) for a
// sprite held by another host, a taken name or a stale fence, with
// errdefs.ErrExists also for a taken name; errdefs.ErrNotFound;
// errdefs.ErrInvalid; errdefs.ErrUnavailable when etcd does not answer in
// time or this Node's lease is lost. Every etcd call is bounded by
// Config.RequestTimeout. An error from a write that timed out does not say
// the write did not happen: read the sprite again with Get.
package cluster

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Host is one wispd as the cluster sees it: what it can run and where its
// API answers.
type Host struct {
	ID        string    `json:"id"`
	API       string    `json:"api"` // base URL of its TCP API
	CPUClass  string    `json:"cpu_class,omitempty"`
	QEMU      string    `json:"qemu,omitempty"`
	Runsc     string    `json:"runsc,omitempty"`
	Accel     string    `json:"accel,omitempty"`
	Version   string    `json:"version,omitempty"`
	CPUs      int       `json:"cpus,omitempty"`
	MemoryMiB int       `json:"memory_mib,omitempty"`
	Draining  bool      `json:"draining,omitempty"`
	Started   time.Time `json:"started"`
}

// Fence is the etcd revision of a claim: the CreateRevision of the owner key
// this Node put. Fenced calls succeed only while that very key still exists.
type Fence int64

// Head states: a published sprite is at rest.
const (
	StateSleeping = "sleeping"
	StateStopped  = "stopped"
)

// Head is a sprite's published state at rest.
type Head struct {
	Generation uint64            `json:"generation"`
	Manifest   string            `json:"manifest"`
	Host       string            `json:"host"` // the owner that published it
	Backend    string            `json:"backend"`
	State      string            `json:"state"` // StateSleeping or StateStopped
	Compat     map[string]string `json:"compat,omitempty"`
	Time       time.Time         `json:"time"`
}

// Sprite is what etcd knows of one sprite.
type Sprite struct {
	Name  string
	Owner string // host id of the live owner; "" at rest
	Fence Fence  // the owner's fence; 0 at rest
	Head  *Head  // nil: never published
}

// Config configures a Node. Endpoints and Host.ID are required.
type Config struct {
	Endpoints []string
	Host      Host
	// Previous is the lease of this host's previous incarnation (Node.Lease
	// as it was saved), or 0. If that lease still holds this host's entry
	// (a daemon restarted after a crash, within the TTL), Join takes the
	// entry over at once; the previous lease's owner keys stay until it
	// expires, for Reclaim. Without it, Join waits for a held entry's
	// lease to expire and refuses one that is kept alive.
	Previous int64
	// Prefix of every key; default "wisp/". Hosts sharing a cluster must
	// use the same one.
	Prefix string
	// TTL of the host's lease (default 10 s; etcd rounds it up to whole
	// seconds and to its own minimum). Margin is how long before the lease
	// could expire the Node gives up and calls OnLost (default TTL/3, at
	// least 1 s); it must exceed the worst clock drift plus network delay
	// between this host and etcd.
	TTL, Margin time.Duration
	// DialTimeout bounds connecting to etcd (default 5 s); RequestTimeout
	// bounds every etcd call (default 5 s).
	DialTimeout, RequestTimeout time.Duration
	Log                         *slog.Logger
	// OnLost is called once per lost lease, from the Node's own goroutine,
	// when keep-alives have failed for TTL - Margin: the host must stop the
	// VMs of the sprites it owns. The Node registers again only after OnLost
	// returns. OnLost must not call Close.
	OnLost func()
}

const (
	defaultTTL     = 10 * time.Second
	defaultTimeout = 5 * time.Second
	defaultPrefix  = "wisp/"
)

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.TTL == 0 {
		c.TTL = defaultTTL
	}
	if c.Margin == 0 {
		c.Margin = max(c.TTL/3, time.Second)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = defaultTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = defaultTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Host.Started.IsZero() {
		c.Host.Started = time.Now().UTC()
	}
}

// Validate reports what is wrong with c, after defaults.
func (c *Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("cluster: no etcd endpoints: %w", errdefs.ErrInvalid)
	}
	if err := checkName("host id", c.Host.ID); err != nil {
		return err
	}
	if c.TTL < 2*time.Second {
		return fmt.Errorf("cluster: lease TTL %v is under 2 s: %w", c.TTL, errdefs.ErrInvalid)
	}
	if c.Margin <= 0 || c.Margin >= c.TTL {
		return fmt.Errorf("cluster: margin %v must be between 0 and the TTL %v: %w", c.Margin, c.TTL, errdefs.ErrInvalid)
	}
	return nil
}

// checkName refuses names that would escape their key.
func checkName(what, s string) error {
	if s == "" || strings.ContainsAny(s, "/\x00") || s == "." || s == ".." {
		return fmt.Errorf("cluster: bad %s %q: %w", what, s, errdefs.ErrInvalid)
	}
	return nil
}

// kind is an error kind of this package that is also one or more errdefs
// kinds, so that callers may test either.
type kind struct {
	msg   string
	bases []error
}

func (k *kind) Error() string   { return k.msg }
func (k *kind) Unwrap() []error { return k.bases }

var (
	// ErrConflict: a sprite held by another host, a name taken, a stale
	// fence, a host id or an address taken.
	ErrConflict = errdefs.ErrConflict
	// errTaken: a name taken; both ErrConflict and errdefs.ErrExists.
	errTaken error = &kind{"the name is taken", []error{ErrConflict, errdefs.ErrExists}}
)

// HeldError says a sprite is owned live by a host (maybe this one), so it
// cannot be claimed or created. It is an ErrConflict; Host is where to
// forward a request for the sprite.
type HeldError struct {
	Sprite string
	Host   string
	Fence  Fence
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("sprite %q is held by host %s (fence %d)", e.Sprite, e.Host, e.Fence)
}

func (e *HeldError) Unwrap() error { return ErrConflict }

var _ error = (*HeldError)(nil)
