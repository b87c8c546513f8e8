package e2b

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/e2b/envd/filesystem"
	"github.com/wisp-sh/wisp/internal/e2b/envd/process"
)

// sign makes a file URL signature as the SDKs do (src/sandbox/signature.ts).
func sign(path, op, user, tok string, exp int64) string {
	raw := path + ":" + op + ":" + user + ":" + tok
	if exp != 0 {
		raw += ":" + strconv.FormatInt(exp, 10)
	}
	sum := sha256.Sum256([]byte(raw))
	return url.QueryEscape("v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "="))
}

func TestValidSignature(t *testing.T) {
	sb := Sandbox{ID: "i1", AccessToken: "secret"}
	future := time.Now().Add(time.Minute).Unix()
	past := time.Now().Add(-time.Minute).Unix()
	for _, tc := range []struct {
		name, method, query string
		ok                  bool
	}{
		{"read", "GET", "path=/a&signature=" + sign("/a", "read", "", "secret", 0), true},
		{"read with user", "GET", "path=/a&username=user&signature=" + sign("/a", "read", "user", "secret", 0), true},
		{"write", "POST", "path=/a&signature=" + sign("/a", "write", "", "secret", 0), true},
		{"expiring", "GET", "path=/a&signature_expiration=" + strconv.FormatInt(future, 10) + "&signature=" + sign("/a", "read", "", "secret", future), true},
		{"expired", "GET", "path=/a&signature_expiration=" + strconv.FormatInt(past, 10) + "&signature=" + sign("/a", "read", "", "secret", past), false},
		{"read signature used to write", "POST", "path=/a&signature=" + sign("/a", "read", "", "secret", 0), false},
		{"another path", "GET", "path=/b&signature=" + sign("/a", "read", "", "secret", 0), false},
		{"another user", "GET", "path=/a&username=root&signature=" + sign("/a", "read", "user", "secret", 0), false},
		{"another token", "GET", "path=/a&signature=" + sign("/a", "read", "", "other", 0), false},
		{"expiry dropped", "GET", "path=/a&signature=" + sign("/a", "read", "", "secret", future), false},
		{"none", "GET", "path=/a", false},
	} {
		r := httptest.NewRequest(tc.method, "/files?"+tc.query, nil)
		if got := validSignature(r, sb); got != tc.ok {
			t.Errorf("%s: validSignature = %v, want %v", tc.name, got, tc.ok)
		}
	}
	r := httptest.NewRequest("GET", "/files?path=/a&signature="+sign("/a", "read", "", "secret", 0), nil)
	r.Header.Set("X-Access-Token", "wrong")
	if (&Handler{}).envdAuthorized(r, sb) {
		t.Error("a wrong access token passed because the signature was right")
	}
}

func TestMetadataFilter(t *testing.T) {
	// The SDKs escape keys and values, then the query string once more.
	q := url.Values{"metadata": {url.Values{url.QueryEscape("a b"): {url.QueryEscape("x&y")}, "k": {"v"}}.Encode()}}
	want, err := metadataFilter(q.Get("metadata"))
	if err != nil {
		t.Fatal(err)
	}
	if want["a b"] != "x&y" || want["k"] != "v" || len(want) != 2 {
		t.Fatalf("metadataFilter = %v", want)
	}
	if !matches(map[string]string{"a b": "x&y", "k": "v", "other": "1"}, want) {
		t.Error("a superset does not match")
	}
	if matches(map[string]string{"a b": "x&y"}, want) || matches(nil, want) {
		t.Error("a subset matches")
	}
	if !matches(nil, nil) {
		t.Error("no filter does not match everything")
	}
}

func TestEndEvent(t *testing.T) {
	for _, tc := range []struct {
		exit   proto.Exit
		code   int32
		exited bool
		status string
		err    string
	}{
		{proto.Exit{Code: 0}, 0, true, "exit status 0", ""},
		{proto.Exit{Code: 3}, 3, true, "exit status 3", "exit status 3"},
		{proto.Exit{Code: 137, Signal: "KILL"}, -1, false, "signal: killed", "signal: killed"},
		{proto.Exit{Code: 126, Error: "exec: no such user"}, 126, true, "exit status 126", "exec: no such user"},
	} {
		e := endEvent(tc.exit)
		if e.ExitCode != tc.code || e.Exited != tc.exited || e.Status != tc.status || e.GetError() != tc.err {
			t.Errorf("endEvent(%+v) = %+v", tc.exit, e)
		}
	}
}

func TestDiff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	old := tree{
		"same":   {Name: "same", Size: 1, ModTime: t0},
		"grown":  {Name: "grown", Size: 1, ModTime: t0},
		"gone":   {Name: "gone", Size: 1, ModTime: t0},
		"chmod":  {Name: "chmod", Size: 1, ModTime: t0, Mode: 0o644},
		"subdir": {Name: "subdir", IsDir: true, ModTime: t0},
	}
	cur := tree{
		"same":       {Name: "same", Size: 1, ModTime: t0},
		"grown":      {Name: "grown", Size: 2, ModTime: t0.Add(time.Second)},
		"chmod":      {Name: "chmod", Size: 1, ModTime: t0, Mode: 0o600},
		"subdir":     {Name: "subdir", IsDir: true, ModTime: t0.Add(time.Second)}, // a dir's time alone is no event
		"subdir/new": {Name: "new", Size: 3, ModTime: t0},
		"empty":      {Name: "empty", ModTime: t0},
	}
	var got []string
	for _, ev := range diff("/w", old, cur, true) {
		got = append(got, ev.Name+":"+strings.TrimPrefix(ev.Type.String(), "EVENT_TYPE_"))
		if ev.Type != filesystem.EventType_EVENT_TYPE_REMOVE && ev.GetEntry().GetPath() != filepath.Join("/w", ev.Name) {
			t.Errorf("event %s has entry %v", ev.Name, ev.GetEntry())
		}
	}
	want := "chmod:CHMOD empty:CREATE grown:WRITE subdir/new:CREATE subdir/new:WRITE gone:REMOVE"
	if strings.Join(got, " ") != want {
		t.Errorf("diff = %s\nwant   %s", strings.Join(got, " "), want)
	}
}

func TestLoginCommand(t *testing.T) {
	cfg := func(cmd string, args ...string) *process.ProcessConfig {
		return &process.ProcessConfig{Cmd: cmd, Args: args}
	}
	if c, ok := loginCommand(cfg("/bin/bash", "-l", "-c", "echo hi")); !ok || c != "echo hi" {
		t.Errorf("the SDKs' form not recognised: %q %v", c, ok)
	}
	for _, c := range []*process.ProcessConfig{cfg("/bin/bash", "-i", "-l"), cfg("/bin/sh", "-l", "-c", "x"), cfg("/bin/bash", "-c", "x"), cfg("/bin/bash", "-l", "-c", "x", "y")} {
		if _, ok := loginCommand(c); ok {
			t.Errorf("%v taken for the SDKs' login command", c)
		}
	}
}

func TestStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e2b", "sandboxes.json")
	s, err := openStore(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i, id := range []string{"b", "a", "c"} {
		if err := s.put(Sandbox{ID: id, StartedAt: now.Add(time.Duration(i) * time.Second), Metadata: map[string]string{"i": strconv.Itoa(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.update("a", func(sb *Sandbox) bool { sb.Paused = true; return true }); err != nil {
		t.Fatal(err)
	}
	if err := s.remove("c"); err != nil {
		t.Fatal(err)
	}
	again, err := openStore(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sb := range again.list() {
		ids = append(ids, sb.ID)
	}
	if strings.Join(ids, ",") != "b,a" {
		t.Errorf("reopened store lists %v, want b,a (oldest first)", ids)
	}
	if sb, _ := again.get("a"); !sb.Paused || sb.Metadata["i"] != "1" {
		t.Errorf("reopened a = %+v", sb)
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		if len(id) != 20 || id[0] < 'a' || id[0] > 'z' || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("id %q twice", id)
		}
		seen[id] = true
	}
}

// fakeImages is Images for the tests of derived.
type fakeImages map[string]struct {
	at   time.Time
	size int64
}

func (f fakeImages) Built(name string) (time.Time, int64, bool) {
	i, ok := f[name]
	return i.at, i.size, ok
}

func (f fakeImages) SaveSprite(context.Context, string, string, string, string) error { return nil }
func (f fakeImages) Notes(string) (map[string]string, error)                          { return nil, nil }
func (f fakeImages) Remove(string) error                                              { return nil }

func TestDerived(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type img = struct {
		at   time.Time
		size int64
	}
	for _, tc := range []struct {
		name   string
		images fakeImages
		want   bool
	}{
		{"none", fakeImages{"dev": img{t0, 2600 << 20}}, false},
		{"fresh and small", fakeImages{"dev": img{t0, 2600 << 20}, "e2b-dev": img{t0.Add(time.Hour), 3 << 30}}, true},
		{"older than its source", fakeImages{"dev": img{t0, 2600 << 20}, "e2b-dev": img{t0.Add(-time.Hour), 3 << 30}}, false},
		{"larger than its source's GiB", fakeImages{"dev": img{t0, 2600 << 20}, "e2b-dev": img{t0.Add(time.Hour), 10 << 30}}, false},
		{"no source", fakeImages{"e2b-dev": img{t0, 3 << 30}}, false},
	} {
		h := &Handler{opt: Options{Images: tc.images}}
		d, ok := h.derived("dev")
		if ok != tc.want || ok && d != "e2b-dev" {
			t.Errorf("%s: derived = %q %v, want %v", tc.name, d, ok, tc.want)
		}
	}
	if gibs(1) != 1 || gibs(1<<30) != 1 || gibs(1<<30+1) != 2 || gibs(0) != 1 {
		t.Error("gibs rounds wrong")
	}
}
