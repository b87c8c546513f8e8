package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// The front door serves every sprite's URL: http://NAME.localhost:7780/
// (or http://PORT.NAME.localhost:7780/) and the path form
// http://127.0.0.1:7780/s/NAME/ (or /s/PORT.NAME/) for clients that do not
// resolve *.localhost. It proxies to the port (8080 unless named) at the
// sprite's own address, which the host reaches directly: the target is
// always taken from the sprite's record, never from the request, so no
// Host header or path reaches another sprite or a host service.
const (
	DefaultURLPort = sprite.DefaultURLPort
	pathPrefix     = "/s/"
	// CredParam is the query parameter of a signed URL's credential;
	// CredCookie the cookie the front door turns it into. Neither
	// reaches the sprite.
	CredParam  = "_wisp"
	CredCookie = "wisp_url"
	// e2bSuffix ends the hosts of E2B's form, PORT-ID.e2b.localhost.
	e2bSuffix = ".e2b.localhost"
)

// Site is what a front-door request is for: a port of a sprite.
type Site struct {
	Sprite string
	Port   int
	// Bare: the label named no port (NAME): the sprite's default port,
	// its first service's --port or else 8080, which the front door
	// reads from its record (Port says 8080 until then).
	Bare bool
	// Prefix is the path prefix of the path form ("/s/3000.web"); empty
	// for the host form.
	Prefix string
}

// Label is the site as its URLs name it: NAME for the sprite's default
// port, else PORT.NAME.
func (s Site) Label() string {
	if s.Bare {
		return s.Sprite
	}
	return strconv.Itoa(s.Port) + "." + s.Sprite
}

// parseLabel reads NAME or PORT.NAME.
func parseLabel(l string) (Site, error) {
	s := Site{Sprite: l, Port: DefaultURLPort, Bare: true}
	if p, name, ok := strings.Cut(l, "."); ok {
		port, err := strconv.Atoi(p)
		if err != nil || p[0] < '1' || p[0] > '9' || len(p) > 5 || port > 65535 {
			return Site{}, fmt.Errorf("%q is not a site: want NAME or PORT.NAME, PORT 1-65535: %w", l, errdefs.ErrInvalid)
		}
		s.Sprite, s.Port, s.Bare = name, port, false
	}
	if err := sprite.ValidateName(s.Sprite); err != nil {
		return Site{}, err
	}
	return s, nil
}

// errNoSite is a request that names no site: answered 404.
var errNoSite = errors.New("this is wisp's front door: open http://NAME.localhost:PORT/ or /s/NAME/ (`wisp url NAME` prints a sprite's URL)")

// Route reads the site a request is for from its Host header and escaped
// path, and returns the escaped path to ask the sprite for. The host form
// is NAME.localhost or PORT.NAME.localhost; the path form /s/LABEL/... is
// served on a Host that is an IP literal or localhost only, so a page of
// another site that a DNS rebinding points at the front door does not get
// in. slash says that a path-form request lacks the slash after the label
// (the caller redirects: relative links need it).
func Route(host, escapedPath string) (site Site, rest string, slash bool, err error) {
	if host == "" || len(host) > 300 {
		return Site{}, "", false, fmt.Errorf("request without a usable Host header: %w", errdefs.ErrInvalid)
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.ToLower(h)
	if l, ok := strings.CutSuffix(h, e2bSuffix); ok {
		// E2B's form, which the e2b SDKs' getHost(port) makes:
		// PORT-ID.e2b.localhost, the sandbox ID a sprite's name.
		p, name, ok := strings.Cut(l, "-")
		if !ok {
			return Site{}, "", false, fmt.Errorf("%q is not an E2B host: want PORT-ID%s: %w", host, e2bSuffix, errdefs.ErrInvalid)
		}
		site, err := parseLabel(p + "." + name)
		return site, escapedPath, false, err
	}
	if l, ok := strings.CutSuffix(h, ".localhost"); ok {
		site, err := parseLabel(l)
		return site, escapedPath, false, err
	}
	if _, err := netip.ParseAddr(h); err != nil && h != "localhost" {
		return Site{}, "", false, fmt.Errorf("unknown host %q: %w", host, errNoSite)
	}
	after, ok := strings.CutPrefix(escapedPath, pathPrefix)
	if !ok {
		return Site{}, "", false, errNoSite
	}
	label, tail, hasSlash := strings.Cut(after, "/")
	if site, err = parseLabel(label); err != nil {
		return Site{}, "", false, err
	}
	site.Prefix = pathPrefix + label
	return site, "/" + tail, !hasSlash, nil
}

// Sprites is what the front door needs of the Manager.
type Sprites interface {
	// Record returns a sprite's record (errdefs.ErrNotFound: no such
	// sprite); it is called on every request, so it must be cheap.
	Record(name string) (sprite.Sprite, error)
	// Use makes sure the sprite runs (waking or booting it, once for any
	// number of callers), says whether it was brought up for this call,
	// and keeps it awake until release.
	Use(ctx context.Context, name string) (rec sprite.Sprite, woke bool, release func(), err error)
}

var _ Sprites = (*sprite.Manager)(nil)

// Credentials checks what a request presents to open a private sprite's
// URL (auth.Key: signed, expiring grants; API tokens can join it).
type Credentials interface {
	// Check returns nil when cred opens port of sprite now, or an error
	// that says why not. It changes nothing and is safe for concurrent use.
	Check(cred, sprite string, port int) error
}

// FrontDoor is the http.Handler of the front door.
type FrontDoor struct {
	Log     *slog.Logger
	Sprites Sprites
	Creds   Credentials
	// Wait bounds how long a request that woke or started a sprite waits
	// for its port to accept connections (default 10 s).
	Wait time.Duration

	proxy     *httputil.ReverseProxy
	transport *http.Transport
}

// target is where one request goes, carried in its context to the
// transport's dial and the proxy's rewrite.
type target struct {
	site      Site
	id        string // the sprite's ID
	addr      string // the sprite's address:port
	rest      string // escaped path to ask for
	query     string // raw query without the credential
	stripAuth bool   // the Authorization header was the front door's credential
}

type targetKey struct{}

// NewFrontDoor returns the front door's handler.
func NewFrontDoor(log *slog.Logger, sprites Sprites, creds Credentials) *FrontDoor {
	f := &FrontDoor{Log: log, Sprites: sprites, Creds: creds, Wait: 10 * time.Second}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	f.transport = &http.Transport{
		Proxy: nil, // never an HTTP_PROXY from the environment
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			t, ok := ctx.Value(targetKey{}).(*target)
			if !ok {
				return nil, errors.New("front door: dial without a target")
			}
			return dialer.DialContext(ctx, "tcp4", t.addr)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:       f.rewrite,
		Transport:     f.transport,
		FlushInterval: -1, // streams (SSE, chunked) pass at once
		ErrorHandler:  f.proxyError,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return f
}

func (f *FrontDoor) rewrite(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(*target)
	// Pooled connections are keyed by this host: the sprite's ID and port
	// (an address may pass to another sprite after a destroy).
	u := &url.URL{Scheme: "http", Host: t.id + ".sprite:" + strconv.Itoa(t.site.Port), RawQuery: t.query}
	if p, err := url.PathUnescape(t.rest); err == nil {
		u.Path = p
		if u.EscapedPath() != t.rest {
			u.RawPath = t.rest
		}
	} else {
		u.Path = t.rest // unreachable: the server decoded it already
	}
	pr.Out.URL = u
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
	if t.site.Prefix != "" {
		pr.Out.Header.Set("X-Forwarded-Prefix", t.site.Prefix)
	}
	stripCookie(pr.Out.Header)
	if t.stripAuth {
		pr.Out.Header.Del("Authorization")
	}
}

// stripCookie removes the front door's cookie from h's Cookie headers.
func stripCookie(h http.Header) {
	var keep []string
	for _, line := range h.Values("Cookie") {
		var parts []string
		for _, c := range strings.Split(line, ";") {
			if name, _, _ := strings.Cut(strings.TrimSpace(c), "="); name != CredCookie {
				parts = append(parts, strings.TrimSpace(c))
			}
		}
		if len(parts) > 0 {
			keep = append(keep, strings.Join(parts, "; "))
		}
	}
	h.Del("Cookie")
	for _, v := range keep {
		h.Add("Cookie", v)
	}
}

// splitQuery returns raw without the credential parameter, and its value.
func splitQuery(raw string) (rest, cred string) {
	if !strings.Contains(raw, CredParam) {
		return raw, ""
	}
	var keep []string
	for _, kv := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == CredParam {
			if uv, err := url.QueryUnescape(v); err == nil && cred == "" {
				cred = uv
			}
			continue
		}
		keep = append(keep, kv)
	}
	return strings.Join(keep, "&"), cred
}

func (f *FrontDoor) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	t := r.Context().Value(targetKey{}).(*target)
	if r.Context().Err() != nil {
		return // the client went away
	}
	msg := fmt.Sprintf("cannot reach port %d of sprite %q: %v", t.site.Port, t.site.Sprite, err)
	if errors.Is(err, syscall.ECONNREFUSED) {
		msg = fmt.Sprintf("nothing listens on port %d in sprite %q", t.site.Port, t.site.Sprite)
	}
	f.Log.Debug("front door", sprite.LogSprite, t.site.Sprite, sprite.LogErr, err)
	plain(w, http.StatusBadGateway, msg)
}

// plain answers a short text.
func plain(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// plainError answers err with its kind's status (errors.go) and its hint.
func plainError(w http.ResponseWriter, err error) {
	code, _ := status(err)
	if errors.Is(err, errNoSite) {
		code = http.StatusNotFound
	}
	msg := err.Error()
	if h := errdefs.Hint(err); h != "" {
		msg += "\nhint: " + h
	}
	plain(w, code, msg)
}

func privateText(s Site) string {
	return fmt.Sprintf("401: the URL of sprite %q is private (or there is no such sprite).\n"+
		"Open a signed URL (`wisp url %s --signed`), send `Authorization: Bearer <credential>`, or make it public (`wisp url %s --public`).",
		s.Sprite, s.Sprite, s.Sprite)
}

// access is what authorize decided about a request.
type access struct {
	allowed   bool
	fromQuery bool   // by the credential in the query (answered with the cookie)
	bearer    bool   // by the Authorization header's (not passed on)
	why       string // why a credential presented was refused
	err       error  // the sprite's lookup failed, told to holders of its credential only
}

// authorize decides who may in: anyone when the sprite is public, else a
// request with a credential for the site in the query, the cookie or an
// Authorization: Bearer header. A stranger learns no more about a sprite
// that does not exist than about a private one.
func (f *FrontDoor) authorize(r *http.Request, site Site, qcred string) access {
	rec, err := f.Sprites.Record(site.Sprite)
	acc := access{allowed: err == nil && rec.URLPublic}
	check := func(cred string) bool {
		if cred == "" || f.Creds == nil {
			return false
		}
		err := f.Creds.Check(cred, site.Sprite, site.Port)
		if err != nil && acc.why == "" {
			acc.why = err.Error()
		}
		return err == nil
	}
	if !acc.allowed && check(qcred) {
		acc.allowed, acc.fromQuery = true, true
	}
	if !acc.allowed {
		for _, c := range r.CookiesNamed(CredCookie) {
			if check(c.Value) {
				acc.allowed = true
				break
			}
		}
	}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") && check(strings.TrimSpace(a[7:])) {
		acc.allowed, acc.bearer = true, true
	}
	if err != nil && acc.allowed {
		acc.err = err
	}
	return acc
}

func (f *FrontDoor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		plain(w, http.StatusMethodNotAllowed, "CONNECT is not served here")
		return
	}
	site, rest, slash, err := Route(r.Host, r.URL.EscapedPath())
	if err != nil {
		plainError(w, err)
		return
	}
	if slash {
		loc := site.Prefix + "/"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, loc, http.StatusPermanentRedirect)
		return
	}
	if site.Bare {
		if rec, err := f.Sprites.Record(site.Sprite); err == nil {
			site.Port = rec.URLPort() // a service's --port, else 8080
		}
	}
	t := &target{site: site, rest: rest}
	var qcred string
	t.query, qcred = splitQuery(r.URL.RawQuery)

	acc := f.authorize(r, site, qcred)
	t.stripAuth = acc.bearer
	if acc.err != nil {
		plainError(w, acc.err)
		return
	}
	if !acc.allowed {
		msg := privateText(site)
		if acc.why != "" {
			msg += "\nThe credential presented was refused: " + acc.why
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="wisp"`)
		plain(w, http.StatusUnauthorized, msg)
		return
	}
	if acc.fromQuery {
		path := site.Prefix
		if path == "" {
			path = "/"
		}
		// Host-only (no Domain): the cookie goes back to this host alone.
		http.SetCookie(w, &http.Cookie{Name: CredCookie, Value: qcred, Path: path, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}

	t0 := time.Now()
	rec, woke, release, err := f.Sprites.Use(r.Context(), site.Sprite)
	if err != nil {
		plainError(w, err)
		return
	}
	defer release() // an open request or WebSocket keeps the sprite awake
	if rec.Address == "" {
		plain(w, http.StatusServiceUnavailable, fmt.Sprintf("sprite %q has no network (wispd --network=false)", site.Sprite))
		return
	}
	t.id, t.addr = rec.ID, net.JoinHostPort(rec.Address, strconv.Itoa(site.Port))
	if woke {
		f.transport.CloseIdleConnections() // pooled connections from before a sleep may be dead
		up := time.Since(t0)
		err := waitPort(r.Context(), t.addr, f.Wait)
		f.Log.Debug("request brought the sprite up", sprite.LogSprite, site.Sprite, "up", up.Round(time.Millisecond), "port", time.Since(t0).Round(time.Millisecond), sprite.LogErr, err)
		if err != nil {
			plain(w, http.StatusBadGateway, fmt.Sprintf("sprite %q is up, but nothing listened on port %d within %s", site.Sprite, site.Port, f.Wait))
			return
		}
	}
	f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, t)))
}

// waitPort waits (at most wait) until addr accepts a connection.
func waitPort(ctx context.Context, addr string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp4", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// HTTPServer returns the server to serve f with: request headers bounded
// in size and time, idle connections closed. Bodies and responses are not
// bounded (uploads, streams).
func (f *FrontDoor) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           f,
		ReadHeaderTimeout: ReadHeaderTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(f.Log.Handler(), slog.LevelDebug),
	}
}

// Close lets go of pooled connections to sprites.
func (f *FrontDoor) Close() { f.transport.CloseIdleConnections() }
