package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/token"
	"github.com/wisp-sh/wisp/internal/vmm"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

type oneImage struct{ root string }

func (f oneImage) Root(name string) (string, error) {
	if name != "minimal" {
		return "", errdefs.ErrInvalid
	}
	return f.root, nil
}
func (f oneImage) Boot(context.Context) (string, string, error) { return "/k", "/i", nil }

// remoteFixture is a Server with a real Manager (on a fake driver) and a
// real token store, served on a unix socket and on a TCP port.
type remoteFixture struct {
	t      *testing.T
	srv    *Server
	tcp    string // host:port
	unix   *http.Client
	remote *http.Client
}

func newRemote(t *testing.T) *remoteFixture {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (make deps)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o700)
	mgr, err := sprite.NewManager(slog.New(slog.DiscardHandler), sprite.Options{
		DataDir: data, Backend: "fake", Drivers: map[string]vmm.Driver{"fake": &vmmtest.Driver{}}, Images: oneImage{img},
		Defaults: sprite.CreateOptions{CPUs: 1, MemoryMiB: 256, DiskGiB: 1, Image: "minimal"},
		Limits:   sprite.Limits{MaxCPUs: 4, MaxMemoryMiB: 4096, MaxDiskGiB: 100},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mgr.Close()
		ents, _ := os.ReadDir(filepath.Join(data, "logs"))
		for _, d := range ents {
			vmm.RemoveLogDir(filepath.Join(data, "logs", d.Name()))
		}
	})
	for _, n := range []string{"a", "b"} {
		if _, err := mgr.Create(context.Background(), sprite.CreateOptions{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := token.Open(filepath.Join(dir, "tokens.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fx := &remoteFixture{t: t, srv: &Server{Log: slog.New(slog.DiscardHandler), Sprites: mgr, Tokens: st}}

	sock := filepath.Join(dir, "api.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fx.tcp = tln.Addr().String()
	uhs, ths := fx.srv.HTTPServer(), fx.srv.RemoteHTTPServer()
	go uhs.Serve(uln)
	go ths.Serve(tln)
	t.Cleanup(func() { uhs.Close(); ths.Close() })
	fx.unix = &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	// Redirects are answers too: a route's redirect to a clean path
	// must not stand in for the scope check.
	fx.remote = &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return fx
}

// do sends a request and returns the status and body. over is "unix" or
// "tcp"; bearer, if not empty, goes in the Authorization header as is.
func (fx *remoteFixture) do(over, method, path, auth string, body any) (int, []byte, http.Header) {
	fx.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	c, base := fx.remote, "http://"+fx.tcp
	if over == "unix" {
		c, base = fx.unix, "http://wisp"
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		fx.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		fx.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// token makes a token over the unix socket and returns its secret.
func (fx *remoteFixture) token(req api.TokenCreateRequest) string {
	fx.t.Helper()
	code, b, _ := fx.do("unix", "POST", "/v1/tokens", "", req)
	var tok api.Token
	if code != http.StatusCreated || json.Unmarshal(b, &tok) != nil || tok.Token == "" || tok.Name != req.Name {
		fx.t.Fatalf("create token %+v: %d %s", req, code, b)
	}
	return tok.Token
}

func names(t *testing.T, b []byte) string {
	t.Helper()
	var list []struct{ Name string }
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("list %s: %v", b, err)
	}
	var n []string
	for _, s := range list {
		n = append(n, s.Name)
	}
	return strings.Join(n, ",")
}

func errCode(t *testing.T, b []byte) string {
	t.Helper()
	var e api.ErrorBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %s: %v", b, err)
	}
	return e.Error.Code
}

func TestRemoteNeedsAToken(t *testing.T) {
	fx := newRemote(t)
	full := fx.token(api.TokenCreateRequest{Name: "full"})
	key := fx.token(api.TokenCreateRequest{Name: "sdk", E2B: true})

	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wisp_" + strings.Repeat("0", 64), "Basic " + full, full, "Bearer " + full + "x", "Bearer " + key} {
		code, b, h := fx.do("tcp", "GET", "/v1/sprites", auth, nil)
		if code != http.StatusUnauthorized || errCode(t, b) != api.CodeUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: %d %s, want 401 unauthorized", auth, code, b)
		}
	}
	if code, b, _ := fx.do("tcp", "GET", "/v1/sprites", "Bearer "+full, nil); code != 200 || names(t, b) != "a,b" {
		t.Fatalf("full token: %d %s", code, b)
	}
	if code, b, _ := fx.do("tcp", "GET", "/v1/sprites/b", "bearer "+full, nil); code != 200 {
		t.Fatalf("full token, GET b: %d %s", code, b)
	}
	// The unix socket needs none.
	if code, b, _ := fx.do("unix", "GET", "/v1/sprites", "", nil); code != 200 || names(t, b) != "a,b" {
		t.Fatalf("unix: %d %s", code, b)
	}

	// Token management is the unix socket's, whatever the token.
	for _, r := range []struct{ method, path string }{{"GET", "/v1/tokens"}, {"POST", "/v1/tokens"}, {"DELETE", "/v1/tokens/full"}} {
		code, b, _ := fx.do("tcp", r.method, r.path, "Bearer "+full, api.TokenCreateRequest{Name: "more"})
		if code != http.StatusForbidden || errCode(t, b) != api.CodePermission {
			t.Errorf("%s %s over TCP: %d %s, want 403", r.method, r.path, code, b)
		}
	}
	if code, b, _ := fx.do("unix", "GET", "/v1/tokens", "", nil); code != 200 || names(t, b) != "full,sdk" || strings.Contains(string(b), full) || strings.Contains(string(b), "sha256") {
		t.Fatalf("token list: %d %s", code, b)
	}

	// A revoked token opens nothing from the next request on.
	if code, b, _ := fx.do("unix", "DELETE", "/v1/tokens/full", "", nil); code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", code, b)
	}
	if code, b, _ := fx.do("tcp", "GET", "/v1/sprites", "Bearer "+full, nil); code != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d %s, want 401", code, b)
	}
	if code, _, _ := fx.do("unix", "DELETE", "/v1/tokens/full", "", nil); code != http.StatusNotFound {
		t.Fatalf("revoke twice: %d, want 404", code)
	}
}

func TestRemoteScopedToken(t *testing.T) {
	fx := newRemote(t)
	scoped := "Bearer " + fx.token(api.TokenCreateRequest{Name: "only-a", Sprites: []string{"a"}})

	if code, b, _ := fx.do("tcp", "GET", "/v1/sprites", scoped, nil); code != 200 || names(t, b) != "a" {
		t.Fatalf("scoped list: %d %s, want a only", code, b)
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/version", 200},
		{"GET", "/v1/sprites/a", 200},
		{"GET", "/v1/sprites/a/policy", 200},
		{"GET", "/v1/sprites/%61", 200}, // the route unescapes the name, and so does the check
		{"GET", "/v1/sprites/b", 404},
		{"DELETE", "/v1/sprites/b", 404},
		{"POST", "/v1/sprites/b/stop", 404},
		{"GET", "/v1/sprites/b/secrets", 404},
		{"GET", "/v1/sprites/nosuch", 404},
		{"GET", "/v1/sprites/a%2F..%2Fb", 404},
		{"GET", "/v1/sprites/a/../b", 404},
		{"POST", "/v1/sprites", 403},
		{"POST", "/v1/sprites/a/fork", 403},
		{"GET", "/v1/images", 403},
		{"POST", "/v1/images/x/save", 403},
		{"GET", "/v1/doctor", 403},
		{"GET", "/v1/tokens", 403},
	} {
		code, b, _ := fx.do("tcp", c.method, c.path, scoped, map[string]string{"name": "c", "sprite": "b"})
		if code != c.want {
			t.Errorf("scoped %s %s: %d %s, want %d", c.method, c.path, code, b, c.want)
		}
		if c.want == 404 && errCode(t, b) != api.CodeNotFound {
			t.Errorf("scoped %s %s: code %s, want not_found", c.method, c.path, errCode(t, b))
		}
	}
	// Nothing the scoped token was refused happened.
	if code, b, _ := fx.do("unix", "GET", "/v1/sprites", "", nil); code != 200 || names(t, b) != "a,b" {
		t.Fatalf("after refusals: %d %s", code, b)
	}
	if code, b, _ := fx.do("unix", "GET", "/v1/sprites/b", "", nil); code != 200 || !strings.Contains(string(b), `"running"`) {
		t.Fatalf("b after a refused stop: %d %s", code, b)
	}
}

// E2B's requests go to the handler given for them, before any wisp token
// check; without one, they are wisp requests like any other.
func TestRemoteE2BSeam(t *testing.T) {
	fx := newRemote(t)
	for _, c := range []struct {
		path, hdr string
	}{{"/sandboxes", ""}, {"/v2/sandboxes", ""}, {"/templates/x", ""}, {"/files", "E2b-Sandbox-Id"}} {
		req, _ := http.NewRequest("GET", "http://"+fx.tcp+c.path, nil)
		if c.hdr != "" {
			req.Header.Set(c.hdr, "sbx")
		}
		resp, err := fx.remote.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without an E2B handler: %d, want 401", c.path, resp.StatusCode)
		}
	}

	fx.srv.E2B = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	fx.srv.E2BMatch = nil
	hs := fx.srv.RemoteHTTPServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	for _, c := range []struct {
		path, hdr string
		want      int
	}{{"/sandboxes", "", 418}, {"/v2/sandboxes", "", 418}, {"/templates/x", "", 418}, {"/files", "E2b-Sandbox-Id", 418}, {"/sandboxesx", "", 401}, {"/v1/sprites", "", 401}} {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+c.path, nil)
		if c.hdr != "" {
			req.Header.Set(c.hdr, "sbx")
		}
		resp, err := fx.remote.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s with an E2B handler: %d, want %d", c.path, resp.StatusCode, c.want)
		}
	}
}

func TestRemoteHTTPServerBounds(t *testing.T) {
	hs := (&Server{}).RemoteHTTPServer()
	if hs.ReadHeaderTimeout != ReadHeaderTimeout || hs.IdleTimeout != IdleTimeout || hs.MaxHeaderBytes != MaxHeaderBytes {
		t.Errorf("TCP server bounds %s %s %d, want the unix socket's", hs.ReadHeaderTimeout, hs.IdleTimeout, hs.MaxHeaderBytes)
	}
}
