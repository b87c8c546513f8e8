package sprite

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// Network gives sprites their networks (internal/network implements it).
//
// Addresses: Reserve marks one that a recorded sprite holds, Allocate
// gives out a free one, Release takes it back. Attach makes sure a
// sprite's namespace, links, rules and DNS exist and follow the policy,
// and is idempotent: the manager calls it before every start, wake,
// restore and adoption. SetPolicy changes an attached sprite's policy at
// once. Detach removes all of a sprite's network (idempotent); Prune
// removes what belongs to no sprite in keep.
type Network interface {
	Reserve(guest netip.Addr)
	Allocate() (netip.Addr, error)
	Release(guest netip.Addr)
	Attach(ctx context.Context, id string, guest netip.Addr, mac string, p network.Policy, tap bool) (*vmm.Net, error)
	SetPolicy(id string, p network.Policy) error
	Detach(id string) error
	Prune(keep map[string]bool) error
	Stats(id string) (network.Stats, error)
}

// allocAddress gives rec an address, when the daemon has sprite networking.
func (m *Manager) allocAddress(rec *Sprite) error {
	if m.opt.Net == nil {
		return nil
	}
	a, err := m.opt.Net.Allocate()
	if err != nil {
		return err
	}
	rec.Address = a.String()
	return nil
}

// dropNetwork removes rec's network and frees its address.
func (m *Manager) dropNetwork(rec Sprite) error {
	if m.opt.Net == nil || rec.Address == "" {
		return nil
	}
	err := m.opt.Net.Detach(rec.ID)
	if a, perr := netip.ParseAddr(rec.Address); perr == nil {
		m.opt.Net.Release(a)
	}
	return err
}

// attachNetwork makes rec's network ready for its backend; nil when the
// daemon has none or rec has no address (a sprite made without one).
func (m *Manager) attachNetwork(ctx context.Context, rec Sprite, d vmm.Driver) (*vmm.Net, error) {
	if m.opt.Net == nil || rec.Address == "" {
		return nil, nil
	}
	a, err := netip.ParseAddr(rec.Address)
	if err != nil {
		return nil, fmt.Errorf("sprite %q: bad address %q in its record", rec.Name, rec.Address)
	}
	tu, tap := d.(vmm.TapUser)
	return m.opt.Net.Attach(ctx, rec.ID, a, rec.MAC, rec.Policy, tap && tu.WantsTap())
}

// SetPolicy changes a sprite's egress policy: recorded first, then applied
// at once to a running sprite (new connections follow it; open ones are
// checked at their next packet), or at its next start.
func (m *Manager) SetPolicy(ctx context.Context, name string, p network.Policy) (Sprite, error) {
	if err := p.Normalize(); err != nil {
		return Sprite{}, err
	}
	return m.change(name, func(e *entry) error {
		rec := e.rec
		if err := guard(OpSetPolicy, rec); err != nil {
			return err
		}
		if m.opt.Net == nil {
			return errdefs.WithHint(fmt.Errorf("this daemon has no sprite networking: %w", errdefs.ErrUnavailable), "see `wisp doctor`")
		}
		rec.Policy = p
		if err := m.persist(e, rec); err != nil {
			return err
		}
		return m.opt.Net.SetPolicy(rec.ID, p)
	})
}

// netStats fills in a sprite's traffic counters, where it has a network.
func (m *Manager) netStats(rec *Sprite) {
	if m.opt.Net == nil || rec.Address == "" {
		return
	}
	if st, err := m.opt.Net.Stats(rec.ID); err == nil {
		rec.NetRxBytes, rec.NetTxBytes = st.RxBytes, st.TxBytes
	}
}
