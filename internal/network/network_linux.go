package network

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// Network is the host side of sprite networking. Its methods are safe for
// concurrent use; each sprite's changes are serialized.
type Network struct {
	cfg Config
	res *resolver

	// nft serializes every nftables exchange: a rule listing taken while
	// another batch commits can be inconsistent (a rule listed twice, so
	// deleted twice: ENOENT fails the whole batch).
	nft sync.Mutex

	mu      sync.Mutex
	used    map[netip.Addr]bool // guest addresses given out
	sprites map[string]*attached
	gen     atomic.Uint32
}

// attached is a sprite whose links, rules and DNS are up.
type attached struct {
	id        string
	gw, guest netip.Addr
	policy    atomic.Pointer[Policy]
	dns       *dnsServer

	mu      sync.Mutex               // orders policy changes and learning
	learned map[netip.Addr]time.Time // what the learned set holds, until when
}

// Open checks the host, turns on IPv4 forwarding, and makes the table and
// its base rules (again, after a daemon restart: sprites' traffic then
// meets the fail-closed drop until each is attached).
func Open(cfg Config) (*Network, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
	}
	if os.Getuid() != 0 {
		return nil, errors.New("sprite networking needs root (network namespaces, nftables)")
	}
	if err := checkOverlap(cfg.CIDR); err != nil {
		return nil, err
	}
	res, err := newResolver(cfg.Log, cfg.Upstreams, cfg.HostsFile)
	if err != nil {
		return nil, err
	}
	n := &Network{cfg: cfg, res: res, used: map[netip.Addr]bool{}, sprites: map[string]*attached{}}
	n.gen.Store(rand.Uint32() | 1)
	if err := sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, fmt.Errorf("turn on IPv4 forwarding: %w", err)
	}
	deny := append(append(append([]netip.Prefix{}, DefaultDeny...), hostLANs()...), cfg.Deny...)
	if err := n.setupTable(deny, cfg.Open); err != nil {
		return nil, fmt.Errorf("nftables table %s: %w", cfg.Name, err)
	}
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return nil, err
	}
	return n, nil
}

// checkOverlap refuses a sprite CIDR that overlaps a route of the host's
// (other than the sprites' own links).
func checkOverlap(cidr netip.Prefix) error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		p, ok := netipPrefix(r.Dst.IP, r.Dst.Mask)
		if !ok || p.Bits() == 0 || !p.Overlaps(cidr) {
			continue
		}
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Type() == "veth" && cidr.Contains(p.Addr()) && p.Bits() == 30 {
			continue // a sprite's link, left by an earlier daemon
		}
		return errdefs.WithHint(fmt.Errorf("sprite network %s overlaps the host's route to %s: %w", cidr, p, errdefs.ErrInvalid),
			"choose another range with wispd --net-cidr")
	}
	return nil
}

func netipPrefix(ip []byte, mask []byte) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := netMaskSize(mask)
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func netMaskSize(m []byte) (int, int) {
	ones := 0
	for _, b := range m {
		for i := 7; i >= 0; i-- {
			if b&(1<<i) != 0 {
				ones++
			}
		}
	}
	return ones, len(m) * 8
}

// hostLANs are the networks directly on the interfaces that carry the
// host's default routes: the LAN a sprite must not reach (its gateway
// included, as a destination; traffic to the internet still goes through
// it).
func hostLANs() []netip.Prefix {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	up := map[int]bool{}
	for _, r := range routes {
		if r.Dst == nil {
			up[r.LinkIndex] = true
		} else if ones, _ := netMaskSize(r.Dst.Mask); ones == 0 {
			up[r.LinkIndex] = true
		}
	}
	var out []netip.Prefix
	for idx := range up {
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if p, ok := netipPrefix(a.IP, a.Mask); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// Reserve marks guest as given out (a sprite that exists).
func (n *Network) Reserve(guest netip.Addr) {
	n.mu.Lock()
	n.used[guest] = true
	n.mu.Unlock()
}

// Allocate gives out the lowest free guest address.
func (n *Network) Allocate() (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := 0; i < n.cfg.slots(); i++ {
		_, g := n.cfg.slotAddrs(i)
		if !n.used[g] {
			n.used[g] = true
			return g, nil
		}
	}
	return netip.Addr{}, errdefs.WithHint(fmt.Errorf("sprite network %s is full: %w", n.cfg.CIDR, errdefs.ErrUnavailable), "destroy sprites, or give wispd a larger --net-cidr")
}

// Release gives guest back.
func (n *Network) Release(guest netip.Addr) {
	n.mu.Lock()
	delete(n.used, guest)
	n.mu.Unlock()
}

// Attach makes sure sprite id's namespace, links, rules and DNS server
// exist and follow p, and returns what its backend needs. It is
// idempotent, and called before every start, wake and restore: it repairs
// what a crash or runsc left.
func (n *Network) Attach(ctx context.Context, id string, guest netip.Addr, mac string, p Policy, tap bool) (*vmm.Net, error) {
	gw, err := n.cfg.gatewayOf(guest)
	if err != nil {
		return nil, err
	}
	if err := p.Normalize(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.used[guest] = true
	s := n.sprites[id]
	if s == nil {
		s = &attached{id: id, gw: gw, guest: guest, learned: map[netip.Addr]time.Time{}}
		n.sprites[id] = s
	}
	n.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := n.ensureNetns(id); err != nil {
		return nil, err
	}
	if err := n.ensureLinks(id, gw, mac, tap); err != nil {
		return nil, fmt.Errorf("links of sprite %s: %w", id, err)
	}
	if err := n.applySprite(s, p, n.gen.Add(1), false); err != nil {
		return nil, fmt.Errorf("rules of sprite %s: %w", id, err)
	}
	s.policy.Store(&p)
	if s.dns == nil {
		d, err := serveDNS(n.res, gw, func() Policy { return *s.policy.Load() }, func(name string, addrs []netip.Addr, ttl time.Duration) {
			n.learn(s, name, addrs, ttl)
		})
		if err != nil {
			return nil, err
		}
		s.dns = d
	}
	link := nsLink
	if tap {
		link = tapLink
	}
	return &vmm.Net{Netns: n.nsPath(id), Link: link, Address: netip.PrefixFrom(guest, 30).String(), Gateway: gw.String()}, nil
}

// learn makes the addresses a DNS answer gave for an allowed name
// reachable for ttl.
func (n *Network) learn(s *attached, name string, addrs []netip.Addr, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	until := now.Add(ttl)
	var add, refresh []netip.Addr
	for _, a := range addrs {
		cur, ok := s.learned[a]
		switch {
		case ok && cur.After(now.Add(time.Second)) && !cur.Before(until.Add(-ttl/2)):
			continue // there long enough
		case ok && cur.After(now.Add(time.Second)):
			refresh = append(refresh, a)
		default:
			add = append(add, a)
		}
	}
	if len(add)+len(refresh) == 0 {
		return
	}
	if len(s.learned) >= maxLearned {
		for a, t := range s.learned {
			if t.Before(now) {
				delete(s.learned, a)
			}
		}
	}
	if err := n.setLearned(s.id, add, refresh, ttl); err != nil {
		n.cfg.Log.Warn("could not open addresses answered for an allowed name", "sprite_id", s.id, "name", name, "err", err)
		return
	}
	for _, a := range append(add, refresh...) {
		s.learned[a] = until
	}
}

// SetPolicy applies p to an attached sprite at once: new connections
// follow it, and open ones are checked against it at their next packet.
// The addresses DNS opened under the old policy are forgotten (they do
// not say which name they came from); the sprite resolves again. A sprite
// that is not attached gets p at its next Attach.
func (n *Network) SetPolicy(id string, p Policy) error {
	if err := p.Normalize(); err != nil {
		return err
	}
	n.mu.Lock()
	s := n.sprites[id]
	n.mu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := n.applySprite(s, p, n.gen.Add(1), true); err != nil {
		return fmt.Errorf("rules of sprite %s: %w", id, err)
	}
	s.policy.Store(&p)
	clear(s.learned)
	return nil
}

// Detach removes everything of sprite id: DNS server, rules, links,
// namespace. Idempotent.
func (n *Network) Detach(id string) error {
	n.mu.Lock()
	s := n.sprites[id]
	delete(n.sprites, id)
	n.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.dns != nil {
			s.dns.close()
			s.dns = nil
		}
	}
	var errs []error
	errs = append(errs, n.removeSprite(id))
	if l, err := netlink.LinkByName(n.hostLink(id)); err == nil {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, deleteNetns(n.nsPath(id)))
	return errors.Join(errs...)
}

// Prune removes the namespaces, links and rules of sprites not in keep:
// leftovers of sprites destroyed while the daemon was down, of warm
// snapshot builds, of crashes. Call it once the live sprites are attached
// or known.
func (n *Network) Prune(keep map[string]bool) error {
	stale := map[string]bool{}
	if ents, err := os.ReadDir(NetnsDir); err == nil {
		for _, e := range ents {
			if id, ok := strings.CutPrefix(e.Name(), n.cfg.Name+"-"); ok {
				stale[id] = true
			}
		}
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if id, ok := strings.CutPrefix(l.Attrs().Name, n.cfg.LinkPrefix); ok && l.Type() == "veth" {
				stale[id] = true
			}
		}
	}
	if ids, err := n.nftSprites(); err == nil {
		for id := range ids {
			stale[id] = true
		}
	}
	var errs []error
	for id := range stale {
		if keep[id] {
			continue
		}
		n.cfg.Log.Info("removing the network of a sprite that no longer exists", "sprite_id", id)
		errs = append(errs, n.Detach(id))
	}
	return errors.Join(errs...)
}

// Stats returns sprite id's traffic counters.
func (n *Network) Stats(id string) (Stats, error) { return linkStats(n.hostLink(id)) }

// Close stops the DNS servers; namespaces, links and rules stay for the
// next daemon (sprites keep running without it).
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.sprites {
		s.mu.Lock()
		if s.dns != nil {
			s.dns.close()
			s.dns = nil
		}
		s.mu.Unlock()
	}
	return nil
}

// CIDR is the range sprites' addresses come from.
func (n *Network) CIDR() netip.Prefix { return n.cfg.CIDR }
