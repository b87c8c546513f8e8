package network

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/wisp-sh/wisp/internal/network/nettest"
)

// These tests build real namespaces, veths and nftables rules, and stand
// in for a sprite with a bare namespace (its veth end holds the guest
// address, as under gVisor). The "outside" is a namespace of the test's
// own at 198.51.100.2; the forbidden servers are in it too, at a private
// and the metadata address, routed to only for the sprites' range (a
// policy-routing rule of the test's), so no traffic leaves this machine.

const (
	testName   = "wtst"
	testPrefix = "wtt-"
)

var (
	testCIDR  = netip.MustParsePrefix("10.231.0.0/24")
	outsideIP = nettest.OutsideIP
	otherIP   = nettest.OtherIP
	privateIP = nettest.PrivateIP
	metaIP    = nettest.MetaIP
)

type fixture struct {
	n     *Network
	hosts string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: network namespaces and nftables")
	}
	out := nettest.Start(t, testCIDR)
	n, err := Open(Config{CIDR: testCIDR, Name: testName, LinkPrefix: testPrefix, HostsFile: out.Hosts, Upstreams: []string{out.DNS}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{n: n, hosts: out.Hosts}
	t.Cleanup(func() {
		f.n.Prune(nil)
		f.n.Close()
		DropTable(testName)
	})
	return f
}

// sprite is a bare namespace attached as a sprite.
type sprite struct {
	id    string
	guest netip.Addr
	net   string // namespace path
	gw    string
}

func (f *fixture) attach(t *testing.T, id string, p Policy) sprite {
	t.Helper()
	g, err := f.n.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	nt, err := f.n.Attach(context.Background(), id, g, "52:54:00:aa:bb:cc", p, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := AddressVeth(nt); err != nil { // as a sandbox about to start
		t.Fatal(err)
	}
	return sprite{id: id, guest: g, net: nt.Netns, gw: strings.TrimSuffix(nt.Gateway, "/30")}
}

// dial connects from inside the sprite; the socket stays in its namespace.
func (s sprite) dial(t *testing.T, addr string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := InNetns(s.net, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// get fetches http://addr/ from inside the sprite, giving the connect
// timeout (short where a drop is expected: a drop is only seen as a
// timeout; long where an answer is, so a busy machine does not fail it).
func (s sprite) get(t *testing.T, addr string, timeout time.Duration) (string, error) {
	t.Helper()
	c, err := s.dial(t, addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	if !strings.Contains(string(b), "hello") {
		return "", fmt.Errorf("unexpected answer %q", b)
	}
	return string(b), nil
}

// resolve asks the sprite's DNS server from inside the sprite.
func (s sprite) resolve(t *testing.T, name string) (*dns.Msg, error) {
	t.Helper()
	var m *dns.Msg
	err := InNetns(s.net, func() error {
		c := &dns.Client{Timeout: 2 * time.Second}
		conn, err := c.Dial(net.JoinHostPort(s.gw, "53"))
		if err != nil {
			return err
		}
		defer conn.Close()
		q := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
		m, _, err = c.ExchangeWithConn(q, conn)
		return err
	})
	return m, err
}

func mustReach(t *testing.T, s sprite, addr string) {
	t.Helper()
	if _, err := s.get(t, addr, 10*time.Second); err != nil {
		t.Errorf("sprite %s cannot reach %s: %v", s.id, addr, err)
	}
}

func mustNotReach(t *testing.T, s sprite, addr string) {
	t.Helper()
	if body, err := s.get(t, addr, time.Second); err == nil {
		t.Errorf("sprite %s reached %s: %q", s.id, addr, body)
	}
}

func TestIsolation(t *testing.T) {
	f := newFixture(t)
	a := f.attach(t, "aaaa", Policy{})
	b := f.attach(t, "bbbb", Policy{})
	out := netip.AddrPortFrom(outsideIP, 80).String()
	mustReach(t, a, out)

	port := nettest.HostServer(t)
	for _, h := range append(nettest.HostAddrs(t), netip.MustParseAddr(a.gw)) {
		mustNotReach(t, a, netip.AddrPortFrom(h, uint16(port)).String())
	}
	mustNotReach(t, a, netip.AddrPortFrom(privateIP, 80).String())
	mustNotReach(t, a, netip.AddrPortFrom(metaIP, 80).String())

	// Another sprite's server.
	var ln net.Listener
	if err := InNetns(b.net, func() (err error) { ln, err = net.Listen("tcp4", ":80"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello from b") }))
	mustNotReach(t, a, netip.AddrPortFrom(b.guest, 80).String())
	// The host itself reaches b (the URL front door will).
	if resp, err := http.Get("http://" + netip.AddrPortFrom(b.guest, 80).String()); err != nil {
		t.Errorf("host cannot reach sprite b: %v", err)
	} else {
		resp.Body.Close()
	}
}

func TestOpenHole(t *testing.T) {
	// --net-allow opens a denied range on purpose.
	f := newFixture(t)
	f.n.Close()
	n, err := Open(Config{CIDR: testCIDR, Name: testName, LinkPrefix: testPrefix, HostsFile: f.hosts,
		Upstreams: []string{"127.0.0.1:1"}, Open: []netip.Prefix{netip.PrefixFrom(privateIP, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	f.n = n
	a := f.attach(t, "aaaa", Policy{})
	mustReach(t, a, netip.AddrPortFrom(privateIP, 80).String())
	mustNotReach(t, a, netip.AddrPortFrom(metaIP, 80).String())
}

func TestPolicy(t *testing.T) {
	f := newFixture(t)
	p, err := ParseAllow("outside.test")
	if err != nil {
		t.Fatal(err)
	}
	a := f.attach(t, "aaaa", p)
	out := netip.AddrPortFrom(outsideIP, 80).String()
	other := netip.AddrPortFrom(otherIP, 80).String()

	// A hard-coded address of an allowed name, before any lookup.
	mustNotReach(t, a, out)
	m, err := a.resolve(t, "outside.test")
	if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("resolve outside.test: %v %v", m, err)
	}
	mustReach(t, a, out)
	mustNotReach(t, a, other)
	if m, err := a.resolve(t, "other.test"); err != nil || m.Rcode != dns.RcodeRefused {
		t.Errorf("other.test: want REFUSED, got %v %v", m, err)
	}

	// By CIDR.
	p, _ = ParseAllow("198.51.100.3/32")
	if err := f.n.SetPolicy(a.id, p); err != nil {
		t.Fatal(err)
	}
	mustReach(t, a, other)
	mustNotReach(t, a, out)

	// A wildcard name resolved by the upstream.
	p, _ = ParseAllow("*.example.test")
	f.n.SetPolicy(a.id, p)
	if m, err := a.resolve(t, "www.example.test"); err != nil || len(m.Answer) != 1 {
		t.Fatalf("www.example.test: %v %v", m, err)
	}
	mustReach(t, a, other)
	if m, _ := a.resolve(t, "example.test"); m == nil || m.Rcode != dns.RcodeRefused {
		t.Errorf("example.test is not under *.example.test: %v", m)
	}

	// Deny-all; the default deny list holds under allow-all.
	f.n.SetPolicy(a.id, Policy{Mode: DenyAll})
	mustNotReach(t, a, other)
	if m, _ := a.resolve(t, "outside.test"); m == nil || m.Rcode != dns.RcodeRefused {
		t.Errorf("deny-all: want REFUSED, got %v", m)
	}
	f.n.SetPolicy(a.id, Policy{Mode: AllowAll})
	mustReach(t, a, out)
	mustNotReach(t, a, netip.AddrPortFrom(metaIP, 80).String())
}

// TestPolicyOpenConnection: a connection open when the policy changes to
// one that denies it is cut at its next packet.
func TestPolicyOpenConnection(t *testing.T) {
	f := newFixture(t)
	a := f.attach(t, "aaaa", Policy{})
	c, err := a.dial(t, netip.AddrPortFrom(outsideIP, 80).String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 12; i++ { // headers and the first lines
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("stream before the change: %v", err)
		}
	}
	f.n.SetPolicy(a.id, Policy{Mode: DenyAll})
	// The sprite's next packet (its ACKs, a write) is rejected with a
	// reset: the stream ends well before the deadline.
	fmt.Fprintf(c, "x")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var err2 error
	for err2 == nil {
		_, err2 = r.ReadString('\n')
	}
	if ne, ok := err2.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the open connection survived deny-all")
	}
}

func TestDetachLeavesNothing(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for i := 0; i < 10; i++ {
		s := f.attach(t, fmt.Sprintf("c%03d", i), Policy{})
		ids = append(ids, s.id)
	}
	for _, id := range ids {
		if err := f.n.Detach(id); err != nil {
			t.Fatal(err)
		}
	}
	if left := leftovers(t, f.n); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// leftovers lists the namespaces, links and chains of n's sprites.
func leftovers(t *testing.T, n *Network) []string {
	var out []string
	ents, _ := os.ReadDir(NetnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), n.cfg.Name+"-") {
			out = append(out, "netns "+e.Name())
		}
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, n.cfg.LinkPrefix) {
			out = append(out, "link "+l.Attrs().Name)
		}
	}
	ids, _ := n.nftSprites()
	for id := range ids {
		out = append(out, "chain s-"+id)
	}
	return out
}

// TestPrune: a daemon that starts finds the networks of sprites it does
// not know (destroyed while no daemon ran, warm-snapshot builds cut short)
// and removes them, keeping the ones it knows.
func TestPrune(t *testing.T) {
	f := newFixture(t)
	keep := f.attach(t, "keep", Policy{})
	f.attach(t, "gone", Policy{})
	f.n.Close()
	n, err := Open(Config{CIDR: testCIDR, Name: testName, LinkPrefix: testPrefix, HostsFile: f.hosts, Upstreams: []string{"127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	f.n = n
	if err := n.Prune(map[string]bool{"keep": true}); err != nil {
		t.Fatal(err)
	}
	left := leftovers(t, n)
	want := []string{"netns wtst-keep", "link wtt-keep", "chain s-keep"}
	for _, w := range want {
		if !slices.Contains(left, w) {
			t.Errorf("pruned %q of a sprite it knows; left %v", w, left)
		}
	}
	if len(left) != len(want) {
		t.Errorf("left %v, want only %v", left, want)
	}
	// The kept sprite works once attached again.
	if _, err := n.Attach(context.Background(), keep.id, keep.guest, "52:54:00:aa:bb:cc", Policy{}, false); err != nil {
		t.Fatal(err)
	}
	mustReach(t, keep, netip.AddrPortFrom(outsideIP, 80).String())
}

// TestConcurrentAttach: many sprites attached at once (20 waking
// together) all get their rules. Concurrent batches once met a rule
// listing taken mid-commit and failed with ENOENT.
func TestConcurrentAttach(t *testing.T) {
	f := newFixture(t)
	var ss []sprite
	for i := 0; i < 20; i++ {
		ss = append(ss, f.attach(t, fmt.Sprintf("k%03d", i), Policy{}))
	}
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for _, s := range ss {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := f.n.Attach(context.Background(), s.id, s.guest, "52:54:00:aa:bb:cc", Policy{}, false); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(round, err)
		}
	}
}

func TestIntervals(t *testing.T) {
	els := intervals([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("240.0.0.0/4")})
	// 10/8 swallows 10.1/16; 240/4 reaches the top and has no end element.
	if len(els) != 3 || els[1].Key[0] != 11 || !els[1].IntervalEnd || els[2].Key[0] != 240 {
		t.Errorf("intervals: %+v", els)
	}
}
