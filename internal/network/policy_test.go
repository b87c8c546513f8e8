package network

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

func TestParseAllow(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // joined Allow, or "error: ..." naming the bad entry
	}{
		{"github.com", "github.com"},
		{" GitHub.com. , *.npmjs.org,198.51.100.0/24", "*.npmjs.org,198.51.100.0/24,github.com"},
		{"198.51.100.7", "198.51.100.7/32"},
		{"198.51.100.7/24", "198.51.100.0/24"},
		{"github.com,github.com", "github.com"},
		{"", "error: at least one entry"},
		{"bad name!", `error: "bad name!"`},
		{"*.*.x", `error: "*.*.x"`},
		{"2001:db8::/32", "error: IPv6"},
		{"300.1.1.1", `error: "300.1.1.1"`},
		{"a..b", `error: "a..b"`},
	} {
		p, err := ParseAllow(tc.in)
		if wantErr, isErr := strings.CutPrefix(tc.want, "error: "); isErr {
			if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("ParseAllow(%q) = %v, %v; want an invalid-argument error mentioning %q", tc.in, p, err, wantErr)
			}
			continue
		}
		if err != nil || strings.Join(p.Allow, ",") != tc.want || p.Mode != AllowList {
			t.Errorf("ParseAllow(%q) = %+v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
	for _, p := range []Policy{{Mode: "open"}, {Mode: DenyAll, Allow: []string{"x.org"}}} {
		if err := p.Normalize(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Normalize(%+v) = %v, want invalid", p, err)
		}
	}
}

func TestAllowsName(t *testing.T) {
	p, _ := ParseAllow("github.com,*.npmjs.org")
	for name, want := range map[string]bool{
		"github.com": true, "api.github.com": false, "npmjs.org": false,
		"registry.npmjs.org": true, "a.b.npmjs.org": true, "evilnpmjs.org": false, "github.com.evil": false,
	} {
		if got := p.AllowsName(name); got != want {
			t.Errorf("AllowsName(%q) = %v, want %v", name, got, want)
		}
	}
	if (Policy{Mode: DenyAll}).AllowsName("x.org") || !(Policy{}).AllowsName("x.org") {
		t.Error("deny-all allows, or allow-all denies")
	}
}

func testDNSServer(t testing.TB, p Policy) (*dnsServer, *[]netip.Addr) {
	hosts := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hosts, []byte("198.51.100.2 outside.test\n::1 six.test\n"), 0o644)
	var learned []netip.Addr
	r := &resolver{upstreams: []string{"127.0.0.1:9"}, hostsPath: hosts, log: slog.New(slog.DiscardHandler)}
	s := &dnsServer{r: r, policy: func() Policy { return p }, learn: func(_ string, a []netip.Addr, _ time.Duration) { learned = append(learned, a...) }}
	return s, &learned
}

func TestDNSAnswer(t *testing.T) {
	p, _ := ParseAllow("outside.test,six.test")
	s, learned := testDNSServer(t, p)
	q := func(name string, t uint16) *dns.Msg { return s.answer(new(dns.Msg).SetQuestion(name, t)) }
	if m := q("outside.test.", dns.TypeA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || len(*learned) != 1 {
		t.Errorf("outside.test: %v, learned %v", m, *learned)
	}
	if m := q("OUTSIDE.test.", dns.TypeAAAA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
		t.Errorf("AAAA: want an empty answer, got %v", m)
	}
	if m := q("six.test.", dns.TypeA); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
		t.Errorf("a name with only an IPv6 hosts entry: %v", m)
	}
	if m := q("other.test.", dns.TypeA); m.Rcode != dns.RcodeRefused {
		t.Errorf("other.test: want REFUSED, got %v", m)
	}
	bad := new(dns.Msg)
	bad.Question = []dns.Question{{Name: "a.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, {Name: "b.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	if m := s.answer(bad); m.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %v", m)
	}
}

// FuzzDNSAnswer: whatever a guest sends, parsed or not, the answer is
// made without a panic, and denied names stay denied.
func FuzzDNSAnswer(f *testing.F) {
	for _, name := range []string{"outside.test.", "other.test.", "x."} {
		b, _ := new(dns.Msg).SetQuestion(name, dns.TypeA).Pack()
		f.Add(b)
	}
	p, _ := ParseAllow("outside.test")
	s, _ := testDNSServer(f, p)
	s.r.upstreams = nil // nothing leaves the fuzzer
	f.Fuzz(func(t *testing.T, data []byte) {
		m := new(dns.Msg)
		if m.Unpack(data) != nil {
			return
		}
		a := s.answer(m)
		if len(m.Question) == 1 && !p.AllowsName(strings.TrimSuffix(strings.ToLower(m.Question[0].Name), ".")) && len(a.Answer) > 0 {
			t.Fatalf("a denied name was answered: %v", a)
		}
	})
}
