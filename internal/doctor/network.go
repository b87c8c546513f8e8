package doctor

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// NetworkInfo is how sprites reach the network.
type NetworkInfo struct {
	Problem      string   `json:"problem,omitempty"` // why sprites have no network
	CIDR         string   `json:"cidr,omitempty"`
	Forwarding   bool     `json:"ipv4_forwarding"`
	DefaultRoute string   `json:"default_route,omitempty"` // "via GW dev IF", or empty: sprites reach nothing outside
	Nftables     string   `json:"nftables,omitempty"`
	Open         []string `json:"open,omitempty"` // --net-allow
	Deny         []string `json:"deny,omitempty"` // --net-deny
}

// ProbeNetwork reports the host's side of sprite networking (the daemon
// calls it once its nftables table is in place).
func ProbeNetwork(name, cidr string, open, deny []netip.Prefix) NetworkInfo {
	n := NetworkInfo{CIDR: cidr, Nftables: "table inet " + name + " (isolation, egress policy, masquerade)"}
	b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	n.Forwarding = strings.TrimSpace(string(b)) == "1"
	n.DefaultRoute = defaultRoute()
	for _, p := range open {
		n.Open = append(n.Open, p.String())
	}
	for _, p := range deny {
		n.Deny = append(n.Deny, p.String())
	}
	return n
}

// defaultRoute reads the IPv4 default route from /proc/net/route.
func defaultRoute() string {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		var gw uint32
		fmt.Sscanf(f[2], "%x", &gw)
		a := netip.AddrFrom4([4]byte{byte(gw), byte(gw >> 8), byte(gw >> 16), byte(gw >> 24)})
		return fmt.Sprintf("via %s dev %s", a, f[0])
	}
	return ""
}

func (n *NetworkInfo) lines(p func(string, ...any)) {
	if n.Problem != "" {
		p("network:         %s", n.Problem)
		return
	}
	p("network:         sprites in %s, a /30 and a namespace each; host, LAN, private and link-local ranges denied", n.CIDR)
	p("ipv4 forwarding: %s", yes(n.Forwarding))
	if n.DefaultRoute == "" {
		p("default route:   none: sprites reach nothing outside this host")
	} else {
		p("default route:   %s (sprites masquerade out of it)", n.DefaultRoute)
	}
	p("nftables:        %s", n.Nftables)
	if len(n.Open) > 0 {
		p("net allow:       %s (opened on purpose with --net-allow)", strings.Join(n.Open, ", "))
	}
	if len(n.Deny) > 0 {
		p("net deny:        %s", strings.Join(n.Deny, ", "))
	}
}
