package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// Addresses hands out sprite addresses that are unique across the
// cluster, so that a sleeping sprite (whose guest holds its address in
// memory) wakes on any host with the address it had. Every host uses the
// same --net-cidr; each address is also a key in etcd, taken by a
// transaction, so two hosts never give one out twice. A sprite that
// leaves a host (ReleaseLocal) keeps its address; one destroyed (Release)
// frees it everywhere.
type Addresses struct {
	sprite.Network
	Node *cluster.Node
}

var _ sprite.Network = (*Addresses)(nil)

// Allocate takes an address free here and in the cluster.
func (a *Addresses) Allocate() (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 256 {
		ip, err := a.Network.Allocate()
		if err != nil {
			return ip, err
		}
		err = a.Node.ReserveAddr(ctx, ip.String())
		if err == nil {
			return ip, nil
		}
		if !errors.Is(err, errdefs.ErrConflict) {
			a.Network.Release(ip)
			return netip.Addr{}, err
		}
		// Another host's sprite has it: it stays taken here too.
	}
	return netip.Addr{}, fmt.Errorf("no free sprite address in the cluster after 256 tries: %w", errdefs.ErrUnavailable)
}

// Release frees an address here and in the cluster (its sprite is gone).
func (a *Addresses) Release(ip netip.Addr) {
	a.Network.Release(ip)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Node.ReleaseAddr(ctx, ip.String())
}

// ReleaseLocal frees an address here only: its sprite moved to another
// host and keeps it.
func (a *Addresses) ReleaseLocal(ip netip.Addr) { a.Network.Release(ip) }
