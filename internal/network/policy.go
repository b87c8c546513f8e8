package network

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Mode is a sprite's egress policy.
type Mode string

const (
	// AllowAll lets a sprite reach every address outside the default deny
	// list (the host, other sprites, private, link-local and multicast
	// ranges). It is the default.
	AllowAll Mode = "allow-all"
	// DenyAll lets a sprite reach nothing; its DNS answers REFUSED.
	DenyAll Mode = "deny-all"
	// AllowList lets a sprite reach only the names and CIDRs in Allow:
	// a name's addresses are reachable for the TTL of the DNS answer that
	// handed them out, so a hard-coded address of an allowed name is not.
	AllowList Mode = "allowlist"
)

// Policy is a sprite's egress policy. The default deny list holds under
// every mode.
type Policy struct {
	Mode Mode `json:"mode"`
	// Allow lists names ("github.com": that name only), wildcards
	// ("*.npmjs.org": its subdomains) and IPv4 CIDRs or addresses.
	Allow []string `json:"allow,omitempty"`
}

// String is the policy as a person reads it.
func (p Policy) String() string {
	if p.Mode == AllowList {
		return "allow " + strings.Join(p.Allow, ",")
	}
	if p.Mode == "" {
		return string(AllowAll)
	}
	return string(p.Mode)
}

var nameRE = regexp.MustCompile(`^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$`)

// maxAllow bounds an allowlist.
const maxAllow = 256

// ParseAllow turns a comma-separated allowlist into an AllowList policy,
// normalized (lower case, no trailing dots, bare addresses as /32), or
// fails with ErrInvalid naming every bad entry.
func ParseAllow(list string) (Policy, error) {
	var entries []string
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f != "" {
			entries = append(entries, f)
		}
	}
	p := Policy{Mode: AllowList, Allow: entries}
	if err := p.Normalize(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Normalize checks p and puts its entries in canonical form.
func (p *Policy) Normalize() error {
	if p.Mode == "" {
		p.Mode = AllowAll
	}
	bad := func(format string, a ...any) error {
		return errdefs.WithHint(fmt.Errorf("egress policy: "+format+": %w", append(a, errdefs.ErrInvalid)...),
			"use --allow 'github.com,*.npmjs.org,198.51.100.0/24', --deny-all or --allow-all")
	}
	switch p.Mode {
	case AllowAll, DenyAll:
		if len(p.Allow) > 0 {
			return bad("mode %s takes no allowlist", p.Mode)
		}
		return nil
	case AllowList:
	default:
		return bad("unknown mode %q", p.Mode)
	}
	if len(p.Allow) == 0 {
		return bad("an allowlist needs at least one entry (or use --deny-all)")
	}
	if len(p.Allow) > maxAllow {
		return bad("%d entries: at most %d", len(p.Allow), maxAllow)
	}
	out := make([]string, 0, len(p.Allow))
	var errs []string
	for _, e := range p.Allow {
		e = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(e)), ".")
		if pfx, err := parseCIDR(e); err == nil {
			out = append(out, pfx.String())
			continue
		} else if looksNumeric(e) {
			errs = append(errs, fmt.Sprintf("%q: %v", e, err))
			continue
		}
		if len(e) > 253 || !nameRE.MatchString(e) {
			errs = append(errs, fmt.Sprintf("%q is neither a host name, a *.domain wildcard nor an IPv4 CIDR", e))
			continue
		}
		out = append(out, e)
	}
	if len(errs) > 0 {
		return bad("%s", strings.Join(errs, "; "))
	}
	slices.Sort(out)
	p.Allow = slices.Compact(out)
	return nil
}

func looksNumeric(s string) bool {
	return strings.ContainsAny(s, ":/") || strings.Trim(s, "0123456789.") == ""
}

// parseCIDR reads an IPv4 CIDR or a bare IPv4 address (as a /32).
func parseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		s = a.String() + "/32"
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("IPv6 is off in sprites; only IPv4 CIDRs")
	}
	return p.Masked(), nil
}

// CIDRs returns the policy's CIDR entries.
func (p Policy) CIDRs() []netip.Prefix {
	var out []netip.Prefix
	for _, e := range p.Allow {
		if pfx, err := parseCIDR(e); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

// AllowsName reports whether the sprite may resolve name (lower case, no
// trailing dot).
func (p Policy) AllowsName(name string) bool {
	switch p.Mode {
	case DenyAll:
		return false
	case AllowList:
		for _, e := range p.Allow {
			if suffix, ok := strings.CutPrefix(e, "*."); ok {
				if strings.HasSuffix(name, "."+suffix) {
					return true
				}
			} else if e == name {
				return true
			}
		}
		return false
	}
	return true
}

// DefaultDeny is what no sprite reaches under any policy: "this" network,
// RFC 1918, shared address space (100.64.0.0/10), loopback, link-local
// (cloud metadata), IETF protocol assignments, benchmarking, multicast,
// reserved and broadcast. The host's own addresses and its LAN are denied
// too (see Open); IPv6 is off in sprites.
var DefaultDeny = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}
