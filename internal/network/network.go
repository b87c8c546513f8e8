// Package network gives every sprite a network of its own: a network
// namespace on the host joined to it by a veth pair, a /30 of its own, IPv4
// masquerade out of the host's default route, nftables rules that keep it
// away from the host, its LAN, other sprites and private ranges, a DNS
// server on its gateway address, and a live egress policy.
//
// Layout, per sprite with id ID (N is the configured name, "wisp"):
//
//	host (root namespace)           namespace N-ID (/var/run/netns/N-ID)
//	  wsp-ID  10.x.y.1/30  <-veth->   eth0  (gVisor: 10.x.y.2/30, runsc's netstack takes it)
//	                                  br0 = eth0 + tap0 (QEMU: the guest's virtio-net holds 10.x.y.2)
//
// A /30 per sprite on a link of its own, rather than one bridge for all:
// no sprite shares a layer-2 segment with another, so there is no ARP or
// broadcast between sprites to filter, and every rule can key on the
// sprite's own interface name. IPv6 is off on both ends of every link and
// dropped from sprites by the rules.
package network

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Config configures the host side of sprite networking.
type Config struct {
	// CIDR holds the sprites' addresses, a /30 each (default 10.229.0.0/16:
	// 16,384 sprites). It must not overlap a network the host routes to.
	CIDR netip.Prefix
	// Name names the nftables table and prefixes the namespaces ("wisp").
	Name string
	// LinkPrefix prefixes the host ends of the sprites' links ("wsp-";
	// for another Name, its first 4 bytes and "-"), at most 5 bytes: a
	// link name is at most 15.
	LinkPrefix string
	// Deny adds ranges to the default deny list; Open punches holes in it
	// (a LAN database a user opens on purpose). Neither reaches the host
	// itself, which sprites never reach but for DNS.
	Deny, Open []netip.Prefix
	// Upstreams are the DNS servers (host:port) a sprite's queries go to;
	// empty: the nameservers of /etc/resolv.conf.
	Upstreams []string
	// HostsFile answers names before the upstreams do ("/etc/hosts").
	HostsFile string
	Log       *slog.Logger
}

// DefaultCIDR is where sprites' addresses come from unless configured.
var DefaultCIDR = netip.MustParsePrefix("10.229.0.0/16")

func (c *Config) defaults() {
	if !c.CIDR.IsValid() {
		c.CIDR = DefaultCIDR
	}
	if c.Name == "" {
		c.Name = "wisp"
	}
	if c.LinkPrefix == "" {
		c.LinkPrefix = "wsp-"
		if c.Name != "wisp" {
			c.LinkPrefix = c.Name[:min(4, len(c.Name))] + "-"
		}
	}
	if c.HostsFile == "" {
		c.HostsFile = "/etc/hosts"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	if !c.CIDR.Addr().Is4() || c.CIDR.Bits() > 28 || c.CIDR.Bits() < 8 {
		return fmt.Errorf("sprite network %s: want an IPv4 CIDR from /8 to /28", c.CIDR)
	}
	if len(c.LinkPrefix) > 5 {
		return fmt.Errorf("link prefix %q: at most 5 bytes", c.LinkPrefix)
	}
	return nil
}

// slots is how many /30s the CIDR holds.
func (c *Config) slots() int { return 1 << (32 - c.CIDR.Bits() - 2) }

// slotAddrs returns slot i's gateway (the host's end) and guest address.
func (c *Config) slotAddrs(i int) (gw, guest netip.Addr) {
	b := c.CIDR.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) * 4
	at := func(x uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	return at(v + 1), at(v + 2)
}

// gatewayOf returns the host's end of guest's /30, if guest is a sprite
// address of this CIDR.
func (c *Config) gatewayOf(guest netip.Addr) (netip.Addr, error) {
	if !c.CIDR.Contains(guest) || guest.As4()[3]%4 != 2 {
		return netip.Addr{}, fmt.Errorf("address %s is not a sprite address in %s", guest, c.CIDR)
	}
	return guest.Prev(), nil
}

// Stats are a sprite's traffic counters, from the host's end of its link
// (they restart when the link is made again).
type Stats struct {
	RxBytes uint64 `json:"rx_bytes"` // to the sprite
	TxBytes uint64 `json:"tx_bytes"` // from the sprite
	// Link is the host end's interface index: counters begin again at
	// zero when the link is made anew.
	Link int `json:"-"`
}

// dnsTimeout bounds one upstream exchange; minLearn is the least time an
// address handed out for an allowed name stays reachable.
const (
	dnsTimeout = 2 * time.Second
	minLearn   = 60 * time.Second
	maxLearn   = 24 * time.Hour
)
