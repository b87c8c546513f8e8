// Package client is the Go SDK of wispd's HTTP API (described by
// api/openapi.yaml, its types in package api). The wisp CLI is built on it.
//
// A Client talks to one wispd: over its unix socket (the default, for
// local use as root or a member of the socket's group) or over TCP with a
// bearer token:
//
//	c := client.New()                                  // DefaultSocket
//	c := client.New(client.FromEnv())                  // WISP_HOST and WISP_TOKEN, else WISP_SOCKET
//	c := client.New(client.WithSocket("/run/wisp/wisp.sock"))
//	c := client.New(client.WithHost("http://10.0.0.5:7781"), client.WithToken(tok))
//
// Sprite(name) returns a handle whose methods act on one sprite; its
// Command runs a program in the sprite in the manner of os/exec.
//
// Errors the API returns are *Error; errors.Is matches them against the
// kinds ErrNotFound, ErrExists, ErrInvalid, ErrState, ErrUnavailable and
// ErrNoSpace.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/wisp-sh/wisp/api"
)

// DefaultSocket is where wispd listens unless told otherwise.
const DefaultSocket = "/run/wisp/wisp.sock"

// Client talks to one wispd. Its methods may be called concurrently.
type Client struct {
	socket string
	base   string // "http://host:port", or "" for the socket
	token  string
	hc     *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithSocket talks to the daemon on the unix socket at path.
func WithSocket(path string) Option { return func(c *Client) { c.socket, c.base = path, "" } }

// WithHost talks to the daemon at a base URL ("http://127.0.0.1:7781")
// over TCP; use WithToken too.
func WithHost(baseURL string) Option {
	return func(c *Client) { c.base = strings.TrimRight(baseURL, "/") }
}

// WithToken sends `Authorization: Bearer token` with every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient uses hc for requests to a host (WithHost); its transport
// is not used for the unix socket.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// FromEnv configures the client as the environment says: WISP_HOST (a
// base URL) and WISP_TOKEN, else WISP_SOCKET; unset variables change
// nothing.
func FromEnv() Option {
	return func(c *Client) {
		if s := os.Getenv("WISP_SOCKET"); s != "" {
			WithSocket(s)(c)
		}
		if h := os.Getenv("WISP_HOST"); h != "" {
			WithHost(h)(c)
		}
		if t := os.Getenv("WISP_TOKEN"); t != "" {
			c.token = t
		}
	}
}

// New returns a client of the daemon on DefaultSocket, or as opts say.
func New(opts ...Option) *Client {
	c := &Client{socket: DefaultSocket}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil || c.base == "" {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if c.base == "" {
			tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) }
			tr.Proxy = nil
		}
		c.hc = &http.Client{Transport: tr}
	}
	return c
}

// Endpoint names where the client goes: a unix socket path or a URL.
func (c *Client) Endpoint() string {
	if c.base != "" {
		return c.base
	}
	return c.socket
}

// ErrDaemon means the daemon could not be reached: nothing listens on
// its socket, or its host does not answer.
var ErrDaemon = errors.New("wispd is not running")

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no daemon at %s): start it with `sudo wispd --socket %s`, or point WISP_SOCKET at a running one", ErrDaemon, c.socket, c.socket)
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("cannot reach wispd at %s: permission denied (run as root or as a member of the socket's group)", c.socket)
		}
		return nil, err
	}
	return conn, nil
}

// url returns the URL of an API path ("/v1/...").
func (c *Client) url(path string) string {
	if c.base != "" {
		return c.base + path
	}
	return "http://wispd" + path
}

// request makes an API request with the client's credentials.
func (c *Client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// send sends req and returns the response of a success; an error
// response becomes an *Error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.netErr(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// do sends body (JSON, if not nil) and decodes the answer into out (if
// not nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := c.request(ctx, method, path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// stream makes a request whose answer is a body to read.
func (c *Client) stream(ctx context.Context, method, path string, body io.Reader, contentType string) (io.ReadCloser, error) {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// netErr is an error of reaching the daemon, said plainly.
func (c *Client) netErr(err error) error {
	err = unwrapURL(err)
	var oe *net.OpError
	if c.base != "" && errors.As(err, &oe) && oe.Op == "dial" {
		return fmt.Errorf("%w at %s: %v", ErrDaemon, c.base, oe.Err)
	}
	return err
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func esc(s string) string { return url.PathEscape(s) }

// Version returns the daemon's version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v api.Version
	err := c.do(ctx, "GET", "/v1/version", nil, &v)
	return v.Version, err
}

// Doctor returns the daemon's report of its host.
func (c *Client) Doctor(ctx context.Context) (api.DoctorReport, error) {
	var out api.DoctorReport
	return out, c.do(ctx, "GET", "/v1/doctor", nil, &out)
}

// List lists the sprites.
func (c *Client) List(ctx context.Context) ([]api.Sprite, error) {
	var out []api.Sprite
	return out, c.do(ctx, "GET", "/v1/sprites", nil, &out)
}

// Create creates and boots a sprite; it returns once the sprite runs.
func (c *Client) Create(ctx context.Context, req api.CreateRequest) (api.Sprite, error) {
	var out api.Sprite
	return out, c.do(ctx, "POST", "/v1/sprites", req, &out)
}

// BenchNetSetup asks the daemon to time n network setups of a sprite (on
// a network of its own) and returns them in milliseconds.
func (c *Client) BenchNetSetup(ctx context.Context, n int) ([]float64, error) {
	var out api.BenchSamples
	return out.Ms, c.do(ctx, "POST", fmt.Sprintf("/v1/bench/net-setup?samples=%d", n), nil, &out)
}
