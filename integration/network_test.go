package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/wisp-sh/wisp/internal/network/nettest"
)

// The test daemons' networks: a name (nftables table, namespaces, links)
// and a range of this test process's own, apart from a default wispd's
// and from another test run's on the same machine.
var (
	testNetName = fmt.Sprintf("wt%02d", os.Getpid()%100)
	testNetCIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(130 + os.Getpid()%90), 0, 0}), 16)
)

// fetch runs an HTTP GET of addr (host:port) inside the sprite with
// busybox nc and reports whether an outside server answered.
func (d *daemon) fetch(name, addr string) (bool, string) {
	d.t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, errOut, _ := d.wisp(nil, "exec", name, "--", "sh", "-c",
		fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc -w 3 %s %s`, host, port))
	return strings.Contains(out, "hello from"), out + errOut
}

func (d *daemon) mustReach(name, addr string) {
	d.t.Helper()
	if ok, out := d.fetch(name, addr); !ok {
		d.t.Errorf("%s cannot reach %s: %q", name, addr, out)
	}
}

func (d *daemon) mustNotReach(name, addr string) {
	d.t.Helper()
	if ok, out := d.fetch(name, addr); ok {
		d.t.Errorf("%s reached %s: %q", name, addr, out)
	}
}

// lookup resolves name inside the sprite; ok when it got an address.
func (d *daemon) lookup(sprite, name string) bool {
	d.t.Helper()
	out, _, code := d.wisp(nil, "exec", sprite, "--", "nslookup", name)
	return code == 0 && strings.Contains(out, "Address") && !strings.Contains(out, "can't find")
}

type netInfo struct {
	Address string `json:"address"`
	Policy  struct {
		Mode  string   `json:"mode"`
		Allow []string `json:"allow"`
	} `json:"policy"`
	NetRxBytes uint64 `json:"net_rx_bytes"`
	NetTxBytes uint64 `json:"net_tx_bytes"`
}

func (d *daemon) netInfo(name string) netInfo {
	d.t.Helper()
	var n netInfo
	if err := json.Unmarshal([]byte(d.ok("info", name, "--json")), &n); err != nil {
		d.t.Fatal(err)
	}
	return n
}

// netLeftovers lists what of the test daemons' networks is still there.
func netLeftovers(t *testing.T) []string {
	var out []string
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), testNetName+"-") {
			out = append(out, "namespace "+e.Name())
		}
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, testNetName+"-") {
			out = append(out, "link "+l.Attrs().Name)
		}
	}
	if b, err := os.ReadFile("/proc/net/route"); err == nil && strings.Contains(string(b), testNetName+"-") {
		out = append(out, "route via "+testNetName+"-*")
	}
	return out
}

// TestNetwork: on both backends, a sprite reaches an outside host and
// none of the host, other sprites, private or link-local servers (real
// ones, in the test's namespace); the egress policy holds by name, by
// CIDR and for hard-coded addresses, applies live (an open connection is
// cut), survives a daemon kill -9, sleep/wake and restore; a fork has an
// address of its own; destroying leaves nothing.
func TestNetwork(t *testing.T) {
	out := nettest.Start(t, testNetCIDR)
	outside := netip.AddrPortFrom(nettest.OutsideIP, 80).String()
	other := netip.AddrPortFrom(nettest.OtherIP, 80).String()
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			d := newDaemon(t, backend, "--hosts-file", out.Hosts, "--dns-upstream", out.DNS)
			d.ok("create", "a")
			d.ok("create", "b")
			a, b := d.netInfo("a"), d.netInfo("b")
			if a.Address == "" || a.Address == b.Address || a.Policy.Mode != "allow-all" {
				t.Fatalf("addresses %q and %q, policy %q: want two of their own, allow-all", a.Address, b.Address, a.Policy.Mode)
			}
			d.mustReach("a", outside)
			if d.netInfo("a").NetTxBytes == 0 {
				t.Errorf("no traffic counted")
			}

			// The host, through every address it has; the sprites'
			// gateways included.
			port := nettest.HostServer(t)
			for _, h := range nettest.HostAddrs(t) {
				d.mustNotReach("a", netip.AddrPortFrom(h, uint16(port)).String())
			}
			// Another sprite's server (the host itself reaches it).
			d.ok("exec", "b", "--", "sh", "-c", "mkdir -p /tmp/www && echo 'hello from b' > /tmp/www/index.html && httpd -p 8080 -h /tmp/www")
			bAddr := netip.AddrPortFrom(netip.MustParseAddr(b.Address), 8080).String()
			waitFor(t, 10*time.Second, "b's server answers the host", func() bool {
				resp, err := http.Get("http://" + bAddr)
				if err == nil {
					resp.Body.Close()
				}
				return err == nil
			})
			d.mustNotReach("a", bAddr)
			// Private and link-local (metadata) servers that are there.
			d.mustNotReach("a", netip.AddrPortFrom(nettest.PrivateIP, 80).String())
			d.mustNotReach("a", netip.AddrPortFrom(nettest.MetaIP, 80).String())

			// Allowlist by name: a hard-coded address first, then the name.
			d.ok("policy", "set", "a", "--allow", "outside.test")
			d.mustNotReach("a", outside)
			if !d.lookup("a", "outside.test") {
				t.Errorf("outside.test does not resolve under its allowlist")
			}
			d.mustReach("a", outside)
			d.mustNotReach("a", other)
			if d.lookup("a", "other.test") {
				t.Errorf("other.test resolves under an allowlist without it")
			}
			// By CIDR.
			d.ok("policy", "set", "a", "--allow", nettest.OtherIP.String()+"/32")
			d.mustReach("a", other)
			d.mustNotReach("a", outside)

			// An open connection is cut by a change that denies it.
			d.ok("policy", "set", "a", "--allow-all")
			d.ok("exec", "a", "--", "sh", "-c", fmt.Sprintf(`(printf 'GET /stream HTTP/1.0\r\n\r\n'; sleep 600) | nc %s 80 > /tmp/stream 2>&1 &`, nettest.OutsideIP))
			waitFor(t, 10*time.Second, "the stream flows", func() bool {
				o, _, _ := d.wisp(nil, "exec", "a", "--", "sh", "-c", "wc -l < /tmp/stream")
				var n int
				fmt.Sscan(o, &n)
				return n > 10
			})
			d.ok("policy", "set", "a", "--deny-all")
			waitFor(t, 10*time.Second, "nc's connection is cut", func() bool {
				_, _, code := d.wisp(nil, "exec", "a", "--", "pidof", "nc")
				return code != 0
			})
			d.mustNotReach("a", outside)
			if d.lookup("a", "outside.test") {
				t.Errorf("deny-all: outside.test resolves")
			}

			// The policy outlives a daemon killed the hard way.
			d.kill9AndRestart()
			if p := d.netInfo("a").Policy.Mode; p != "deny-all" {
				t.Errorf("after kill -9: policy %q, want deny-all", p)
			}
			d.mustNotReach("a", outside)
			d.mustReach("b", outside)
			d.ok("policy", "set", "a", "--allow", "outside.test")
			if !d.lookup("a", "outside.test") {
				t.Errorf("outside.test does not resolve after the restart")
			}
			d.mustReach("a", outside)

			// Sleep and wake, restore: same address, same policy.
			d.ok("sleep", "a")
			d.mustReach("a", outside)
			d.mustNotReach("a", other)
			d.ok("checkpoint", "create", "a")
			d.ok("restore", "a", "v1")
			if got := d.netInfo("a"); got.Address != a.Address || got.Policy.Mode != "allowlist" {
				t.Errorf("after sleep and restore: %+v, want address %s and the allowlist", got, a.Address)
			}
			d.lookup("a", "outside.test")
			d.mustReach("a", outside)

			// A fork has an address of its own (and the policy of its parent).
			d.ok("fork", "b", "c")
			c := d.netInfo("c")
			if c.Address == "" || c.Address == a.Address || c.Address == b.Address {
				t.Errorf("fork's address %q: want one of its own", c.Address)
			}
			d.mustReach("c", outside)
			if o := d.ok("exec", "c", "--", "cat", "/etc/resolv.conf"); !strings.Contains(o, netip.MustParseAddr(c.Address).Prev().String()) {
				t.Errorf("fork's resolver is not its gateway: %q", o)
			}

			for _, s := range []string{"a", "b", "c"} {
				d.ok("destroy", s)
			}
			if left := netLeftovers(t); len(left) > 0 {
				t.Errorf("left behind after destroy: %v", left)
			}
		})
	}
}

// TestNetworkChurn: many sprites created and destroyed leave no
// namespace, link or rule (50 on gVisor; 5 QEMU VMs under TCG).
func TestNetworkChurn(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend, func(t *testing.T) {
			n := 50
			if backend == "qemu" {
				n = 5
			}
			d := newDaemon(t, backend)
			for i := range n {
				name := fmt.Sprintf("s%d", i)
				d.ok("create", name)
				d.ok("destroy", name)
			}
			if left := netLeftovers(t); len(left) > 0 {
				t.Errorf("left behind after %d creates and destroys: %v", n, left)
			}
		})
	}
}
