package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wisp-sh/wisp/internal/auth"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

func TestRoute(t *testing.T) {
	for _, tc := range []struct {
		host, path string
		sprite     string
		port       int
		prefix     string
		rest       string
		slash      bool
		bad        bool
	}{
		{host: "web.localhost:7780", path: "/", sprite: "web", port: 8080, rest: "/"},
		{host: "WEB.LocalHost:7780", path: "/a/b?x", sprite: "web", port: 8080, rest: "/a/b?x"},
		{host: "3000.web.localhost", path: "/x", sprite: "web", port: 3000, rest: "/x"},
		{host: "8080.web.localhost", path: "/x", sprite: "web", port: 8080, rest: "/x"},          // 8080 named: not the default port
		{host: "web.localhost", path: "/s/other/", sprite: "web", port: 8080, rest: "/s/other/"}, // the app's own path
		{host: "127.0.0.1:7780", path: "/s/web/", sprite: "web", port: 8080, prefix: "/s/web", rest: "/"},
		{host: "localhost:7780", path: "/s/3000.web/a%2Fb", sprite: "web", port: 3000, prefix: "/s/3000.web", rest: "/a%2Fb"},
		{host: "[::1]:7780", path: "/s/web", sprite: "web", port: 8080, prefix: "/s/web", rest: "/", slash: true},
		{host: "127.0.0.1:7780", path: "/s/web/../other/", sprite: "web", port: 8080, prefix: "/s/web", rest: "/../other/"}, // the sprite's business
		{host: "3000-iabc123.e2b.localhost:7780", path: "/x", sprite: "iabc123", port: 3000, rest: "/x"},                    // E2B's getHost(port)
		{host: "3000.iabc.e2b.localhost", path: "/", bad: true},
		{host: "iabc.e2b.localhost", path: "/", bad: true},
		{host: "0-iabc.e2b.localhost", path: "/", bad: true},
		{host: "", path: "/s/web/", bad: true},
		{host: "evil.example:7780", path: "/s/web/", bad: true}, // DNS rebinding
		{host: "web.localhost.evil.example", path: "/", bad: true},
		{host: "localhost", path: "/", bad: true},
		{host: "localhost", path: "/web/", bad: true},
		{host: "127.0.0.1", path: "/s/", bad: true},
		{host: "127.0.0.1", path: "/s/%77eb/", bad: true}, // escaped names are not names
		{host: "127.0.0.1", path: "/s/Web/", bad: true},
		{host: "127.0.0.1", path: "/s/../", bad: true},
		{host: "127.0.0.1", path: "/s/0.web/", bad: true},
		{host: "127.0.0.1", path: "/s/65536.web/", bad: true},
		{host: "127.0.0.1", path: "/s/08080.web/", bad: true},
		{host: "127.0.0.1", path: "/s/+80.web/", bad: true},
		{host: "127.0.0.1", path: "/s/80.80.web/", bad: true},
		{host: ".localhost", path: "/", bad: true},
		{host: "-web.localhost", path: "/", bad: true},
		{host: "a.b.web.localhost", path: "/", bad: true},
		{host: "web.localhost.", path: "/", bad: true},
		{host: "web%2elocalhost", path: "/", bad: true},
		{host: "10.229.0.2:8080", path: "/", bad: true}, // a sprite's address is no site
	} {
		site, rest, slash, err := Route(tc.host, tc.path)
		if tc.bad {
			if err == nil {
				t.Errorf("Route(%q, %q) = %+v %q, want an error", tc.host, tc.path, site, rest)
			}
			continue
		}
		// A bare NAME is the sprite's default port (a service's, else 8080).
		bare := !strings.Contains(strings.TrimPrefix(tc.path, "/s/")+tc.host, strconv.Itoa(tc.port)+".web") && !strings.Contains(tc.host, e2bSuffix)
		if err != nil || site.Sprite != tc.sprite || site.Port != tc.port || site.Bare != bare || site.Prefix != tc.prefix || rest != tc.rest || slash != tc.slash {
			t.Errorf("Route(%q, %q) = %+v %q %v %v", tc.host, tc.path, site, rest, slash, err)
		}
	}
}

// FuzzRoute: whatever the Host header and path, a site that Route accepts
// is a valid sprite name and port, named literally by the host or path, and
// the rest of the path is what followed it.
func FuzzRoute(f *testing.F) {
	for _, s := range [][2]string{
		{"web.localhost:7780", "/"}, {"3000.web.localhost", "/x"}, {"127.0.0.1:7780", "/s/web/a"},
		{"localhost", "/s/1.a/"}, {"[::1]:1", "/s/a"}, {"evil.com", "/s/a/"}, {"a.localhost.", "/"},
		{"a..localhost", "/"}, {"127.0.0.1", "/s//"}, {"127.0.0.1", "/s/a%2F/"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		site, rest, slash, err := Route(host, path)
		if err != nil {
			return
		}
		if sprite.ValidateName(site.Sprite) != nil || site.Port < 1 || site.Port > 65535 {
			t.Fatalf("Route(%q, %q) accepted %+v", host, path, site)
		}
		if site.Prefix == "" {
			h := host
			if hh, _, err := net.SplitHostPort(host); err == nil {
				h = hh
			}
			if strings.ToLower(h) != site.Label()+".localhost" || rest != path {
				t.Fatalf("host form Route(%q, %q) = %+v %q", host, path, site, rest)
			}
			return
		}
		if site.Prefix != pathPrefix+site.Label() || !strings.HasPrefix(path, site.Prefix) {
			t.Fatalf("path form Route(%q, %q) = %+v", host, path, site)
		}
		want := path[len(site.Prefix):]
		if slash {
			want = "/"
			if path != site.Prefix {
				t.Fatalf("Route(%q, %q): slash for a path with more", host, path)
			}
		}
		if rest != want {
			t.Fatalf("Route(%q, %q): rest %q, want %q", host, path, rest, want)
		}
	})
}

// fakeSprites is a Sprites whose sprites live at 127.0.0.1.
type fakeSprites struct {
	mu      sync.Mutex
	recs    map[string]sprite.Sprite
	woke    bool // what Use reports
	uses    atomic.Int32
	active  atomic.Int32
	useErr  error
	useWait chan struct{} // when set, Use waits for it
}

func (f *fakeSprites) Record(name string) (sprite.Sprite, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.recs[name]
	if !ok {
		return sprite.Sprite{}, fmt.Errorf("sprite %q: %w", name, errdefs.ErrNotFound)
	}
	return r, nil
}

func (f *fakeSprites) set(r sprite.Sprite) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[r.Name] = r
}

func (f *fakeSprites) Use(ctx context.Context, name string) (sprite.Sprite, bool, func(), error) {
	f.uses.Add(1)
	if f.useWait != nil {
		<-f.useWait
	}
	if f.useErr != nil {
		return sprite.Sprite{}, false, nil, f.useErr
	}
	r, err := f.Record(name)
	if err != nil {
		return r, false, nil, err
	}
	f.active.Add(1)
	return r, f.woke, func() { f.active.Add(-1) }, nil
}

type doorFixture struct {
	t       *testing.T
	key     *auth.Key
	sprites *fakeSprites
	door    *FrontDoor
	front   *httptest.Server
	port    int // the upstream's port on 127.0.0.1
	got     chan *http.Request
}

// newDoor serves a front door for sprite "web" (at 127.0.0.1) whose
// upstream on a free port runs handler (nil: records the request and
// answers "hello").
func newDoor(t *testing.T, handler http.HandlerFunc) *doorFixture {
	fx := &doorFixture{t: t, key: auth.NewKey(), got: make(chan *http.Request, 100)}
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			fx.got <- r
			fmt.Fprint(w, "hello")
		}
	}
	up := httptest.NewServer(handler)
	t.Cleanup(up.Close)
	fx.port = up.Listener.Addr().(*net.TCPAddr).Port
	fx.sprites = &fakeSprites{recs: map[string]sprite.Sprite{"web": {ID: "abc", Name: "web", Address: "127.0.0.1"}}}
	fx.door = NewFrontDoor(slog.New(slog.DiscardHandler), fx.sprites, fx.key)
	fx.front = httptest.NewServer(fx.door)
	t.Cleanup(fx.front.Close)
	t.Cleanup(fx.door.Close)
	return fx
}

// get sends a request for host (Host header) and path to the front door.
func (fx *doorFixture) get(host, path string, hdr ...string) (*http.Response, string) {
	fx.t.Helper()
	req, _ := http.NewRequest("GET", fx.front.URL+path, nil)
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		fx.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func (fx *doorFixture) host() string { return fmt.Sprintf("%d.web.localhost:7780", fx.port) }

func (fx *doorFixture) cred(sprite string, port int, ttl time.Duration) string {
	return fx.key.Sign(auth.Grant{Sprite: sprite, Port: port, Expires: time.Now().Add(ttl)})
}

func TestFrontDoorAccess(t *testing.T) {
	fx := newDoor(t, nil)
	good := fx.cred("web", fx.port, time.Hour)

	// Private by default: 401 with a short explanation, nothing proxied.
	resp, body := fx.get(fx.host(), "/")
	if resp.StatusCode != 401 || !strings.Contains(body, "private") || !strings.Contains(body, "--signed") {
		t.Fatalf("plain request: %d %q", resp.StatusCode, body)
	}
	if fx.sprites.uses.Load() != 0 {
		t.Errorf("a refused request used the sprite")
	}

	// A signed URL: 200, a host-only cookie, the credential not passed on.
	resp, body = fx.get(fx.host(), "/page?a=1&"+CredParam+"="+good+"&b=2", "Cookie", "app=1; "+CredCookie+"=junk")
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("signed: %d %q", resp.StatusCode, body)
	}
	up := <-fx.got
	if up.URL.RawQuery != "a=1&b=2" || up.URL.Path != "/page" || up.Header.Get("Cookie") != "app=1" || up.Host != fx.host() {
		t.Errorf("upstream saw query %q path %q cookie %q host %q", up.URL.RawQuery, up.URL.Path, up.Header.Get("Cookie"), up.Host)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == CredCookie {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value != good || cookie.Domain != "" || cookie.Path != "/" || !cookie.HttpOnly {
		t.Fatalf("cookie %+v: want the credential, host-only, HttpOnly", cookie)
	}
	// The cookie alone works.
	if resp, body = fx.get(fx.host(), "/", "Cookie", CredCookie+"="+good); resp.StatusCode != 200 {
		t.Errorf("cookie: %d %q", resp.StatusCode, body)
	}
	<-fx.got
	// A bearer credential works and is not passed on; an app's own is.
	if resp, _ = fx.get(fx.host(), "/", "Authorization", "Bearer "+good); resp.StatusCode != 200 {
		t.Errorf("bearer: %d", resp.StatusCode)
	}
	if a := (<-fx.got).Header.Get("Authorization"); a != "" {
		t.Errorf("upstream saw the front door's bearer credential %q", a)
	}

	// Credentials of another sprite, port or key, or expired: 401.
	for what, c := range map[string]string{
		"other sprite": fx.cred("api", fx.port, time.Hour),
		"other port":   fx.cred("web", 8080, time.Hour),
		"expired":      fx.cred("web", fx.port, -time.Minute),
		"other key":    auth.NewKey().Sign(auth.Grant{Sprite: "web", Port: fx.port, Expires: time.Now().Add(time.Hour)}),
	} {
		if resp, body = fx.get(fx.host(), "/?"+CredParam+"="+c); resp.StatusCode != 401 || !strings.Contains(body, "refused") {
			t.Errorf("%s: %d %q", what, resp.StatusCode, body)
		}
		if resp, _ = fx.get(fx.host(), "/", "Authorization", "Bearer "+c); resp.StatusCode != 401 {
			t.Errorf("%s as bearer: %d", what, resp.StatusCode)
		}
	}
	// A credential for web does not open another sprite's site.
	fx.sprites.set(sprite.Sprite{ID: "def", Name: "api", Address: "127.0.0.1"})
	if resp, _ = fx.get(fmt.Sprintf("%d.api.localhost", fx.port), "/", "Cookie", CredCookie+"="+good); resp.StatusCode != 401 {
		t.Errorf("web's cookie on api: %d", resp.StatusCode)
	}
	// An unknown sprite looks private to a stranger, not found to a holder.
	if resp, _ = fx.get(fmt.Sprintf("%d.nope.localhost", fx.port), "/"); resp.StatusCode != 401 {
		t.Errorf("unknown sprite: %d, want 401", resp.StatusCode)
	}
	if resp, _ = fx.get(fmt.Sprintf("%d.nope.localhost", fx.port), "/", "Authorization", "Bearer "+fx.cred("nope", fx.port, time.Hour)); resp.StatusCode != 404 {
		t.Errorf("unknown sprite with its credential: %d, want 404", resp.StatusCode)
	}

	// Public: anyone; the app's own Authorization passes.
	fx.sprites.set(sprite.Sprite{ID: "abc", Name: "web", Address: "127.0.0.1", URLPublic: true})
	if resp, _ = fx.get(fx.host(), "/", "Authorization", "Bearer app-token"); resp.StatusCode != 200 {
		t.Errorf("public: %d", resp.StatusCode)
	}
	if a := (<-fx.got).Header.Get("Authorization"); a != "Bearer app-token" {
		t.Errorf("the app's own Authorization did not pass: %q", a)
	}

	// The path form, with its cookie scoped to the path.
	fx.sprites.set(sprite.Sprite{ID: "abc", Name: "web", Address: "127.0.0.1"})
	prefix := fmt.Sprintf("/s/%d.web", fx.port)
	if resp, _ = fx.get("127.0.0.1:7780", prefix); resp.StatusCode != 308 || resp.Header.Get("Location") != prefix+"/" {
		t.Errorf("path form without slash: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = fx.get("127.0.0.1:7780", prefix+"/x/y?"+CredParam+"="+good)
	if resp.StatusCode != 200 || len(resp.Cookies()) != 1 || resp.Cookies()[0].Path != prefix {
		t.Errorf("path form signed: %d %+v", resp.StatusCode, resp.Cookies())
	}
	if up := <-fx.got; up.URL.Path != "/x/y" || up.Header.Get("X-Forwarded-Prefix") != prefix {
		t.Errorf("path form: upstream path %q prefix %q", up.URL.Path, up.Header.Get("X-Forwarded-Prefix"))
	}
	// Another Host than localhost or an address (a DNS rebinding): 404.
	if resp, _ = fx.get("evil.example:7780", prefix+"/", "Authorization", "Bearer "+good); resp.StatusCode != 404 {
		t.Errorf("rebinding host: %d", resp.StatusCode)
	}
	if n := fx.sprites.active.Load(); n != 0 {
		t.Errorf("%d requests still count as activity after they ended", n)
	}
}

func TestFrontDoorStreams(t *testing.T) {
	release := make(chan struct{}, 2)
	fx := newDoor(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/sse", "/chunked":
			if r.URL.Path == "/sse" {
				w.Header().Set("Content-Type", "text/event-stream")
			} else {
				w.Header().Set("Content-Type", "application/octet-stream")
			}
			fmt.Fprint(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			<-release // the client must see "one" before this
			fmt.Fprint(w, "data: two\n\n")
		case "/ws":
			if r.Header.Get("Upgrade") != "websocket" {
				http.Error(w, "no upgrade", 400)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			io.Copy(conn, brw) // echo
		}
	})
	fx.sprites.set(sprite.Sprite{ID: "abc", Name: "web", Address: "127.0.0.1", URLPublic: true})

	// SSE and a plain chunked stream: the first part arrives while the
	// upstream still holds the second.
	for _, path := range []string{"/sse", "/chunked"} {
		req, _ := http.NewRequest("GET", fx.front.URL+path, nil)
		req.Host = fx.host()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
			t.Fatalf("%s: first part: %q %v", path, line, err)
		}
		if fx.sprites.active.Load() != 1 {
			t.Errorf("an open stream does not count as activity")
		}
		release <- struct{}{}
		rest, _ := io.ReadAll(br)
		resp.Body.Close()
		if string(rest) != "\ndata: two\n\n" {
			t.Errorf("%s: rest of the stream: %q", path, rest)
		}
	}

	// A WebSocket-style upgrade is tunnelled both ways, and the open
	// tunnel counts as activity.
	conn, err := net.Dial("tcp", fx.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", fx.host())
	cr := bufio.NewReader(conn)
	uresp, err := http.ReadResponse(cr, nil)
	if err != nil || uresp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", uresp, err)
	}
	for i := range 3 {
		msg := fmt.Sprintf("ping %d\n", i)
		conn.Write([]byte(msg))
		if got, err := cr.ReadString('\n'); err != nil || got != msg {
			t.Fatalf("echo: %q %v", got, err)
		}
	}
	if fx.sprites.active.Load() != 1 {
		t.Errorf("an open WebSocket does not count as activity (%d)", fx.sprites.active.Load())
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for fx.sprites.active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a closed WebSocket still counts as activity")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFrontDoorUpstreamErrors(t *testing.T) {
	fx := newDoor(t, nil)
	fx.sprites.set(sprite.Sprite{ID: "abc", Name: "web", Address: "127.0.0.1", URLPublic: true})
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	free := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	host := fmt.Sprintf("%d.web.localhost", free)

	// Nothing listens: 502 at once, saying so.
	t0 := time.Now()
	resp, body := fx.get(host, "/")
	if resp.StatusCode != 502 || !strings.Contains(body, "nothing listens on port "+strconv.Itoa(free)) || time.Since(t0) > 3*time.Second {
		t.Errorf("nothing listening: %d %q after %s", resp.StatusCode, body, time.Since(t0))
	}

	// A sprite just woken: the request waits for the port, bounded.
	fx.sprites.woke = true
	fx.door.Wait = 300 * time.Millisecond
	if resp, body = fx.get(host, "/"); resp.StatusCode != 502 || !strings.Contains(body, "nothing listened") {
		t.Errorf("woken, nothing listening: %d %q", resp.StatusCode, body)
	}
	fx.door.Wait = 10 * time.Second
	go func() {
		time.Sleep(300 * time.Millisecond) // the server in the sprite comes up a little after the wake
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", free))
		if err != nil {
			return
		}
		t.Cleanup(func() { ln.Close() })
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "late") }))
	}()
	if resp, body = fx.get(host, "/"); resp.StatusCode != 200 || body != "late" {
		t.Errorf("woken, server late: %d %q", resp.StatusCode, body)
	}

	// A sprite that cannot be used: its error, as the API would map it.
	fx.sprites.useErr = fmt.Errorf("cannot use sprite: %w", errdefs.ErrState)
	if resp, _ = fx.get(host, "/"); resp.StatusCode != 409 {
		t.Errorf("use error: %d", resp.StatusCode)
	}
	fx.sprites.useErr = nil

	// No network.
	fx.sprites.set(sprite.Sprite{ID: "abc", Name: "web", URLPublic: true})
	if resp, _ = fx.get(host, "/"); resp.StatusCode != 503 {
		t.Errorf("no network: %d", resp.StatusCode)
	}
}

// TestFrontDoorBounds: the front door's server refuses an oversized
// request header, and bounds how long a header and an idle connection
// may take.
func TestFrontDoorBounds(t *testing.T) {
	fx := newDoor(t, nil)
	hs := fx.door.HTTPServer()
	if hs.ReadHeaderTimeout <= 0 || hs.ReadHeaderTimeout > time.Minute || hs.IdleTimeout <= 0 || hs.MaxHeaderBytes > 1<<20 {
		t.Errorf("unbounded: header timeout %s, idle %s, header bytes %d", hs.ReadHeaderTimeout, hs.IdleTimeout, hs.MaxHeaderBytes)
	}
	hs.ReadHeaderTimeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	conn, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nX-Big: %s\r\n\r\n", fx.host(), strings.Repeat("a", MaxHeaderBytes+8<<10))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: %v %v", resp, err)
	}

	// A client that never finishes its header is cut off.
	slow, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET / HTTP/1.1\r\nHost: %s\r\n", fx.host())
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(slow); err != nil {
		t.Errorf("a slow header was not cut off: %v", err)
	}

	// Bearer is case-insensitive.
	good := fx.cred("web", fx.port, time.Hour)
	if resp, _ := fx.get(fx.host(), "/", "Authorization", "bearer "+good); resp.StatusCode != 200 {
		t.Errorf("lower-case bearer: %d", resp.StatusCode)
	}
}

// TestFrontDoorWebSocket: a real WebSocket client and server (coder/
// websocket) talk through the front door: the handshake passes, messages
// echo both ways, text and binary, and the open socket counts as activity.
func TestFrontDoorWebSocket(t *testing.T) {
	fx := newDoor(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(2 << 20)
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	})
	fx.sprites.set(sprite.Sprite{ID: "abc", Name: "web", Address: "127.0.0.1"})
	front := fx.front.Listener.Addr().String()
	var d net.Dialer
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp4", front) // *.localhost is loopback
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := fmt.Sprintf("ws://%s/echo?%s=%s", fx.host(), CredParam, fx.cred("web", fx.port, time.Hour))
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("dial through the front door: %v (%v)", err, resp)
	}
	defer c.CloseNow()
	c.SetReadLimit(2 << 20)
	for i, m := range []struct {
		typ websocket.MessageType
		b   []byte
	}{{websocket.MessageText, []byte("hello")}, {websocket.MessageBinary, make([]byte, 1<<20)}, {websocket.MessageText, []byte("bye")}} {
		if err := c.Write(ctx, m.typ, m.b); err != nil {
			t.Fatal(err)
		}
		typ, b, err := c.Read(ctx)
		if err != nil || typ != m.typ || len(b) != len(m.b) || string(b) != string(m.b) {
			t.Fatalf("message %d: %v %d bytes %v", i, typ, len(b), err)
		}
	}
	if n := fx.sprites.active.Load(); n != 1 {
		t.Errorf("an open WebSocket counts %d as activity, want 1", n)
	}
	c.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for fx.sprites.active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a closed WebSocket still counts as activity")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Without a credential: no upgrade.
	if _, resp, err := websocket.Dial(ctx, "ws://"+fx.host()+"/echo", &websocket.DialOptions{HTTPClient: hc}); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Errorf("WebSocket without a credential: %v %v", resp, err)
	}
}
