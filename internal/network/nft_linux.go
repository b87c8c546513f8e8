package network

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The rules, in one inet table (nft syntax, for reading):
//
//	set deny4 { interval }   the default deny list, the host's LAN, --net-deny
//	set open4 { interval }   --net-allow: holes in deny4
//	chain forward { hook forward }
//	  iifname "wsp-ID" jump s-ID                  (one a sprite, first)
//	  oifname "wsp-*" ct state established,related accept
//	  oifname "wsp-*" drop                          nothing starts a connection into a sprite
//	  iifname "wsp-*" drop                          a link of no known sprite: fail closed
//	chain s-ID                                      one a sprite
//	  meta nfproto != ipv4 drop
//	  ip saddr != GUEST drop                        no spoofing
//	  oifname "wsp-*" drop                          no sprite to sprite
//	  ip daddr @deny4 ip daddr != @open4 reject
//	  ct state established,related ct mark GEN accept
//	  <policy>: allow-all:  ct mark set GEN accept
//	            deny-all:   reject
//	            allowlist:  ip daddr @a-ID ct mark set GEN accept
//	                        ip daddr @d-ID ct mark set GEN accept   (learned from DNS, with timeouts)
//	                        reject
//	chain input { hook input }
//	  iifname "wsp-ID" ip daddr GATEWAY udp|tcp dport 53 accept   (one pair a sprite, first)
//	  iifname "wsp-*" ct state established,related accept        (answers to the host's own connections)
//	  iifname "wsp-*" drop                                         the host itself, on every address
//	chain postrouting { type nat hook postrouting }
//	  ip saddr CIDR oifname != "wsp-*" masquerade
//
// GEN changes with every policy change: a connection opened under the old
// policy is checked against the new one at its next packet, and cut
// (rejected) if the new one denies it. Every change is one netlink batch,
// which the kernel applies atomically.

func (n *Network) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: n.cfg.Name}
}

func (n *Network) baseChains(t *nftables.Table) (fwd, in, post *nftables.Chain) {
	accept := nftables.ChainPolicyAccept
	fwd = &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	in = &nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	post = &nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept}
	return
}

func intervalSet(t *nftables.Table, name string) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
}

func (n *Network) spriteSets(t *nftables.Table, id string) (allow, learned *nftables.Set) {
	allow = intervalSet(t, "a-"+id)
	learned = &nftables.Set{Table: t, Name: "d-" + id, KeyType: nftables.TypeIPAddr, HasTimeout: true, Size: maxLearned}
	return
}

// maxLearned bounds the addresses a sprite's DNS answers may open.
const maxLearned = 4096

// intervals turns prefixes into interval set elements (end exclusive; a
// range that reaches 255.255.255.255 has no end element).
func intervals(ps []netip.Prefix) []nftables.SetElement {
	var out []nftables.SetElement
	for _, p := range mergePrefixes(ps) {
		p = p.Masked()
		start := p.Addr().As4()
		out = append(out, nftables.SetElement{Key: start[:]})
		last := binary.BigEndian.Uint32(start[:]) | (1<<(32-p.Bits()) - 1)
		if last != 0xffffffff {
			end := make([]byte, 4)
			binary.BigEndian.PutUint32(end, last+1)
			out = append(out, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return out
}

// mergePrefixes drops prefixes contained in others (interval sets refuse
// overlaps).
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for i, p := range ps {
		covered := false
		for j, q := range ps {
			if i != j && q.Bits() <= p.Bits() && q.Contains(p.Addr()) && (q.Bits() < p.Bits() || j < i) {
				covered = true
				break
			}
		}
		if !covered && p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Expression helpers.

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b[:len(s)+1]
}

func matchIf(key expr.MetaKey, name []byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: name}}
}

func (n *Network) iif(id string) []expr.Any {
	return matchIf(expr.MetaKeyIIFNAME, ifname(n.cfg.LinkPrefix+id), expr.CmpOpEq)
}

func (n *Network) iifAny() []expr.Any {
	return matchIf(expr.MetaKeyIIFNAME, []byte(n.cfg.LinkPrefix), expr.CmpOpEq)
}

func (n *Network) oifAny(op expr.CmpOp) []expr.Any {
	return matchIf(expr.MetaKeyOIFNAME, []byte(n.cfg.LinkPrefix), op)
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func ctMarkIs(gen uint32) []expr.Any {
	return []expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeyMARK}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(gen)}}
}

func ctMarkSet(gen uint32) []expr.Any {
	return []expr.Any{&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(gen)}, &expr.Ct{Register: 1, Key: expr.CtKeyMARK, SourceRegister: true}}
}

func ipv4Only() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}}}
}

func isIPv4() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}}}
}

const (
	offSaddr = 12
	offDaddr = 16
)

func ipField(off uint32) *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}
}

func ipIs(off uint32, a netip.Addr, op expr.CmpOp) []expr.Any {
	b := a.As4()
	return []expr.Any{ipField(off), &expr.Cmp{Op: op, Register: 1, Data: b[:]}}
}

func ipIn(off uint32, s *nftables.Set, invert bool) []expr.Any {
	return []expr.Any{ipField(off), &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert}}
}

func ipInPrefix(off uint32, p netip.Prefix) []expr.Any {
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	a := p.Masked().Addr().As4()
	return []expr.Any{ipField(off),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]}}
}

func dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

// reject answers TCP with a reset and everything else with ICMP
// "administratively prohibited", so a denied connection fails at once
// instead of timing out.
func reject(pre ...expr.Any) [][]expr.Any {
	tcp := append(append([]expr.Any{}, pre...),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	other := append(append([]expr.Any{}, pre...),
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})
	return [][]expr.Any{tcp, other}
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func tag(id string) []byte { return []byte("wisp:" + id) }

// setupTable makes (or remakes) the table, its base chains, static rules
// and the deny and open sets, in one batch. Per-sprite jumps are dropped:
// until a sprite is attached again, its traffic meets the fail-closed
// drop. Chains and sets of sprites stay (Attach and Prune deal with them).
func (n *Network) setupTable(deny, open []netip.Prefix) error {
	n.nft.Lock()
	defer n.nft.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := c.AddTable(n.table())
	fwd, in, post := n.baseChains(t)
	for _, ch := range []*nftables.Chain{fwd, in, post} {
		c.AddChain(ch)
		c.FlushChain(ch)
	}
	denySet, openSet := intervalSet(t, "deny4"), intervalSet(t, "open4")
	for _, s := range []struct {
		set *nftables.Set
		ps  []netip.Prefix
	}{{denySet, deny}, {openSet, open}} {
		if err := c.AddSet(s.set, nil); err != nil {
			return err
		}
		c.FlushSet(s.set)
		if els := intervals(s.ps); len(els) > 0 {
			if err := c.SetAddElements(s.set, els); err != nil {
				return err
			}
		}
	}
	add := func(ch *nftables.Chain, e ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: cat(e...)})
	}
	add(fwd, n.oifAny(expr.CmpOpEq), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)})
	add(fwd, n.oifAny(expr.CmpOpEq), []expr.Any{verdict(expr.VerdictDrop)})
	add(fwd, n.iifAny(), []expr.Any{verdict(expr.VerdictDrop)})
	add(in, n.iifAny(), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)})
	add(in, n.iifAny(), []expr.Any{verdict(expr.VerdictDrop)})
	add(post, isIPv4(), ipInPrefix(offSaddr, n.cfg.CIDR), n.oifAny(expr.CmpOpNeq), []expr.Any{&expr.Masq{}})
	return c.Flush()
}

// applySprite (re)writes one sprite's chain, sets and jumps in one batch.
// With forget, the addresses learned from DNS are dropped in the same batch.
func (n *Network) applySprite(s *attached, p Policy, gen uint32, forget bool) error {
	n.nft.Lock()
	defer n.nft.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := n.table()
	fwd, in, _ := n.baseChains(t)
	old, err := n.taggedRules(c, s.id)
	if err != nil {
		return err
	}
	allow, learned := n.spriteSets(t, s.id)
	if err := c.AddSet(allow, nil); err != nil {
		return err
	}
	c.FlushSet(allow)
	if els := intervals(p.CIDRs()); len(els) > 0 {
		if err := c.SetAddElements(allow, els); err != nil {
			return err
		}
	}
	if err := c.AddSet(learned, nil); err != nil {
		return err
	}
	if forget {
		c.FlushSet(learned)
	}
	denySet, openSet := intervalSet(t, "deny4"), intervalSet(t, "open4")
	ch := c.AddChain(&nftables.Chain{Name: "s-" + s.id, Table: t})
	c.FlushChain(ch)
	add := func(e ...[]expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: cat(e...)}) }
	addReject := func(pre ...expr.Any) {
		for _, r := range reject(pre...) {
			add(r)
		}
	}
	drop := []expr.Any{verdict(expr.VerdictDrop)}
	accept := cat(ctMarkSet(gen), []expr.Any{verdict(expr.VerdictAccept)})
	add(ipv4Only(), drop)
	add(ipIs(offSaddr, s.guest, expr.CmpOpNeq), drop)
	add(n.oifAny(expr.CmpOpEq), drop)
	addReject(cat(ipIn(offDaddr, denySet, false), ipIn(offDaddr, openSet, true))...)
	add(ctEstablished(), ctMarkIs(gen), []expr.Any{verdict(expr.VerdictAccept)})
	switch p.Mode {
	case DenyAll:
		addReject()
	case AllowList:
		add(ipIn(offDaddr, allow, false), accept)
		add(ipIn(offDaddr, learned, false), accept)
		addReject()
	default:
		add(accept)
	}
	for _, r := range old {
		if err := c.DelRule(r); err != nil {
			return err
		}
	}
	ins := func(chain *nftables.Chain, e ...[]expr.Any) {
		c.InsertRule(&nftables.Rule{Table: t, Chain: chain, Exprs: cat(e...), UserData: tag(s.id)})
	}
	ins(fwd, n.iif(s.id), []expr.Any{jump(ch.Name)})
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		ins(in, n.iif(s.id), isIPv4(), ipIs(offDaddr, s.gw, expr.CmpOpEq), dport(proto, 53), []expr.Any{verdict(expr.VerdictAccept)})
	}
	return c.Flush()
}

// taggedRules returns the jumps and input rules of sprite id in the base
// chains.
func (n *Network) taggedRules(c *nftables.Conn, id string) ([]*nftables.Rule, error) {
	t := n.table()
	fwd, in, _ := n.baseChains(t)
	var out []*nftables.Rule
	for _, ch := range []*nftables.Chain{fwd, in} {
		rs, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		for _, r := range rs {
			if string(r.UserData) == string(tag(id)) {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// removeSprite deletes a sprite's jumps, chain and sets in one batch;
// what is already gone is skipped.
func (n *Network) removeSprite(id string) error {
	n.nft.Lock()
	defer n.nft.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := n.table()
	old, err := n.taggedRules(c, id)
	if err != nil {
		return err
	}
	for _, r := range old {
		if err := c.DelRule(r); err != nil {
			return err
		}
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return err
	}
	for _, ch := range chains {
		if ch.Table.Name == t.Name && ch.Name == "s-"+id {
			c.FlushChain(ch)
			c.DelChain(ch)
		}
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return err
	}
	for _, s := range sets {
		if s.Name == "a-"+id || s.Name == "d-"+id {
			c.DelSet(s)
		}
	}
	return c.Flush()
}

// spriteIDs lists the ids that have a chain in the table.
func (n *Network) nftSprites() (map[string]bool, error) {
	n.nft.Lock()
	defer n.nft.Unlock()
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name == n.cfg.Name && len(ch.Name) > 2 && ch.Name[:2] == "s-" {
			out[ch.Name[2:]] = true
		}
	}
	return out, nil
}

// setLearned puts addrs into sprite id's learned set with timeout ttl.
// Those in refresh are there already: they are deleted and added again in
// the same batch, which the kernel applies at once, so that they take the
// new timeout without a moment of absence. (A plain add of an element
// that exists keeps its old timeout.)
func (n *Network) setLearned(id string, add, refresh []netip.Addr, ttl time.Duration) error {
	n.nft.Lock()
	defer n.nft.Unlock()
	c, err := nftables.New()
	if err != nil {
		return err
	}
	_, learned := n.spriteSets(n.table(), id)
	els := func(as []netip.Addr, timeout time.Duration) []nftables.SetElement {
		var out []nftables.SetElement
		for _, a := range as {
			b := a.As4()
			out = append(out, nftables.SetElement{Key: b[:], Timeout: timeout})
		}
		return out
	}
	if len(refresh) > 0 {
		if err := c.SetDeleteElements(learned, els(refresh, 0)); err != nil {
			return err
		}
	}
	if err := c.SetAddElements(learned, els(append(add, refresh...), ttl)); err != nil {
		return err
	}
	return c.Flush()
}

// DropTable removes a whole table (tests and benchmarks, on tables of
// their own: sprites' traffic would then meet no rules at all, so never
// the table of a daemon whose sprites run).
func DropTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	return c.Flush()
}
