package cli

import (
	"bytes"
	"github.com/wisp-sh/wisp/api"
	"testing"
)

func TestParseIdle(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{{"never", -1, true}, {"default", 0, true}, {"30s", 30, true}, {"5m", 300, true}, {"0s", 0, false}, {"abc", 0, false}, {"-5m", 0, false}} {
		got, err := parseIdle(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseIdle(%q) = %d, %v", tc.in, got, err)
		}
	}
}

func TestSplitRemote(t *testing.T) {
	for _, tc := range []struct {
		in, name, path string
		remote         bool
	}{{"dev:/x", "dev", "/x", true}, {"./a:b", "", "./a:b", false}, {"/abs", "", "/abs", false}, {"file", "", "", false}} {
		n, p, r := splitRemote(tc.in)
		if r != tc.remote || (r && (n != tc.name || p != tc.path)) {
			t.Errorf("splitRemote(%q) = %q %q %v", tc.in, n, p, r)
		}
	}
}

func TestSanitizer(t *testing.T) {
	var b bytes.Buffer
	s := &sanitizer{w: &b}
	// A character split between writes passes whole; controls do not.
	for _, p := range []string{"ok\n\x1b[2Jbad\x07\tend \xc3", "\xa9t\xc2", "\x9b1m"} {
		s.Write([]byte(p))
	}
	s.Flush()
	if got, want := b.String(), `ok`+"\n"+`\x1b[2Jbad\x07`+"\t"+`end ét\u009b1m`; got != want {
		t.Errorf("sanitized %q, want %q", got, want)
	}
}

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text\n\ttabbed", "plain text\n\ttabbed"},
		{"\x1b]0;owned\x07title", `\x1b]0;owned\x07title`},
		{"csi \u009b2J and \xff", `csi \u009b2J and \xff`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`},
		{"déjà vu", "déjà vu"},
	} {
		if got := printable(tc.in); got != tc.want {
			t.Errorf("printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	s := []float64{5, 1, 4, 2, 3}
	if quantile(s, 0.5) != 3 || quantile(s, 0.9) != 5 || quantile(nil, 0.5) != 0 {
		t.Errorf("quantiles of %v: %v %v", s, quantile(s, 0.5), quantile(s, 0.9))
	}
}

func TestParseForward(t *testing.T) {
	for _, tc := range []struct {
		in            string
		local, remote int
		ok            bool
	}{{"8080", 8080, 8080, true}, {"5433:5432", 5433, 5432, true}, {"0:3000", 0, 3000, true},
		{"3000:0", 0, 0, false}, {"a:1", 0, 0, false}, {"1:2:3", 0, 0, false}, {"70000", 0, 0, false}, {"", 0, 0, false}} {
		f, err := parseForward(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (f.local != tc.local || f.remote != tc.remote)) {
			t.Errorf("parseForward(%q) = %+v, %v", tc.in, f, err)
		}
	}
}

func TestParseSettings(t *testing.T) {
	ch, err := parseSettings([]string{"idle=5m", "cpus=2", "memory=2048", "cap.cpu_seconds=600", "per=month"})
	if err != nil || *ch.update.IdleSeconds != 300 || ch.update.Size.CPUs != 2 || ch.update.Size.MemoryMiB != 2048 ||
		ch.cap.CPUSeconds != 600 || ch.cap.Per != "month" {
		t.Fatalf("%+v %v", ch, err)
	}
	if ch, err := parseSettings([]string{"cap.none"}); err != nil || ch.cap == nil || *ch.cap != (api.Cap{}) {
		t.Fatalf("cap.none: %+v %v", ch, err)
	}
	for _, bad := range [][]string{{"cpus=0"}, {"cpus=x"}, {"cap.cost=-1"}, {"cap.cost=NaN"}, {"per=week", "cap.cost=1"},
		{"per=day"}, {"cap.none", "cap.cost=1"}, {"colour=red"}, {"idle"}} {
		if _, err := parseSettings(bad); err == nil {
			t.Errorf("parseSettings(%q) accepted", bad)
		}
	}
}
