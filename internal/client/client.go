// Package client is the Go client of wispd's HTTP API over its unix socket.
// The CLI uses it; so can programs that drive sprites.
package client

import (
	"bufio"
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
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/image"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// Client talks to one wispd.
type Client struct {
	Socket string
	hc     *http.Client
}

// New returns a client of the daemon listening on socket.
func New(socket string) *Client {
	c := &Client{Socket: socket}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
	}}
	return c
}

// ErrDaemon means the daemon could not be reached.
var ErrDaemon = errors.New("wispd is not running")

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no daemon at %s): start it with `sudo wispd --socket %s`, or point WISP_SOCKET at a running one", ErrDaemon, c.Socket, c.Socket)
		}
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("cannot reach wispd at %s: permission denied (run as root or as a member of the socket's group)", c.Socket)
		}
		return nil, err
	}
	return conn, nil
}

// Error is an error the API returned.
type Error struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint"`
}

func (e *Error) Error() string { return e.Message }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://wispd"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return unwrapURL(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func decodeError(resp *http.Response) error {
	var body struct {
		Error Error `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &body) != nil || body.Error.Message == "" {
		return &Error{Status: resp.StatusCode, Code: "http", Message: fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))}
	}
	body.Error.Status = resp.StatusCode
	return &body.Error
}

func (c *Client) Version(ctx context.Context) (string, error) {
	var v struct{ Version string }
	err := c.do(ctx, "GET", "/v1/version", nil, &v)
	return v.Version, err
}

func (c *Client) List(ctx context.Context) ([]sprite.Sprite, error) {
	var out []sprite.Sprite
	return out, c.do(ctx, "GET", "/v1/sprites", nil, &out)
}

func (c *Client) Get(ctx context.Context, name string) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "GET", "/v1/sprites/"+url.PathEscape(name), nil, &out)
}

func (c *Client) Create(ctx context.Context, o sprite.CreateOptions) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "POST", "/v1/sprites", o, &out)
}

func (c *Client) Start(ctx context.Context, name string) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "POST", "/v1/sprites/"+url.PathEscape(name)+"/start", nil, &out)
}

func (c *Client) Stop(ctx context.Context, name string) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "POST", "/v1/sprites/"+url.PathEscape(name)+"/stop", nil, &out)
}

func (c *Client) Destroy(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/sprites/"+url.PathEscape(name), nil, nil)
}

func (c *Client) Stat(ctx context.Context, name, path string) (proto.FileInfo, error) {
	var out proto.FileInfo
	return out, c.do(ctx, "GET", "/v1/sprites/"+url.PathEscape(name)+"/fs/stat?path="+url.QueryEscape(path), nil, &out)
}

func (c *Client) Doctor(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	return out, c.do(ctx, "GET", "/v1/doctor", nil, &out)
}

func (c *Client) Images(ctx context.Context) ([]image.Info, error) {
	var out []image.Info
	return out, c.do(ctx, "GET", "/v1/images", nil, &out)
}

// Logs returns the sprite's console log (the last tailBytes, if > 0).
func (c *Client) Logs(ctx context.Context, name string, tailBytes int64) (io.ReadCloser, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://wispd/v1/sprites/%s/logs?tail_bytes=%d", url.PathEscape(name), tailBytes), nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, unwrapURL(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp.Body, nil
}

// BuildImage builds an image, calling progress (which may be nil) as the
// build reports.
func (c *Client) BuildImage(ctx context.Context, name string, progress func(image.Progress)) (image.Info, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://wispd/v1/images/"+url.PathEscape(name)+"/build", nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		return image.Info{}, unwrapURL(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return image.Info{}, decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev struct {
			Progress *image.Progress `json:"progress"`
			Image    *image.Info     `json:"image"`
			Error    *Error          `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return image.Info{}, fmt.Errorf("bad build event: %w", err)
		}
		switch {
		case ev.Error != nil:
			return image.Info{}, ev.Error
		case ev.Image != nil:
			return *ev.Image, nil
		case progress != nil && ev.Progress != nil:
			progress(*ev.Progress)
		}
	}
	if err := sc.Err(); err != nil {
		return image.Info{}, err
	}
	return image.Info{}, errors.New("image build ended without a result (daemon stopped?)")
}

// Stream opens a raw stream for req (exec, read, write, tar-in, tar-out):
// the returned connection carries proto frames both ways.
func (c *Client) Stream(ctx context.Context, name string, req proto.Request) (*Stream, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequest("POST", "http://wispd/v1/sprites/"+url.PathEscape(name)+"/stream", bytes.NewReader(body))
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", "wisp-stream")
	hreq.Header.Set("Content-Type", "application/json")
	if err := hreq.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 256<<10)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, decodeError(resp)
	}
	return &Stream{conn: conn, br: br}, nil
}

// Stream is an open frame stream to a sprite.
type Stream struct {
	conn net.Conn
	br   *bufio.Reader
}

// ReadFrame reads one frame (bounded by proto.MaxFrame).
func (s *Stream) ReadFrame() (byte, []byte, error) { return proto.ReadFrame(s.br, proto.MaxFrame) }

// WriteFrame writes one frame.
func (s *Stream) WriteFrame(t byte, p []byte) error { return proto.WriteFrame(s.conn, t, p) }

// WriteJSON writes v as the payload of one frame of type t.
func (s *Stream) WriteJSON(t byte, v any) error { return proto.WriteJSON(s.conn, t, v) }

// Close closes the stream.
func (s *Stream) Close() error { return s.conn.Close() }

// CloseWrite half-closes the stream: no more frames from this side.
func (s *Stream) CloseWrite() error {
	if uc, ok := s.conn.(*net.UnixConn); ok {
		return uc.CloseWrite()
	}
	return nil
}

// SocketFromEnv returns WISP_SOCKET or the default socket path.
func SocketFromEnv(def string) string {
	if s := os.Getenv("WISP_SOCKET"); s != "" {
		return s
	}
	return def
}

func (c *Client) Sleep(ctx context.Context, name string) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "POST", "/v1/sprites/"+url.PathEscape(name)+"/sleep", nil, &out)
}

// SetIdle sets a sprite's idle time in seconds (0 the default, -1 never).
func (c *Client) SetIdle(ctx context.Context, name string, seconds int) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "PATCH", "/v1/sprites/"+url.PathEscape(name), map[string]int{"idle_seconds": seconds}, &out)
}

// Policy returns a sprite's egress policy.
func (c *Client) Policy(ctx context.Context, name string) (network.Policy, error) {
	var out network.Policy
	return out, c.do(ctx, "GET", "/v1/sprites/"+url.PathEscape(name)+"/policy", nil, &out)
}

// SetPolicy replaces a sprite's egress policy; it applies at once.
func (c *Client) SetPolicy(ctx context.Context, name string, p network.Policy) (network.Policy, error) {
	var out network.Policy
	return out, c.do(ctx, "PUT", "/v1/sprites/"+url.PathEscape(name)+"/policy", p, &out)
}

func (c *Client) CreateCheckpoint(ctx context.Context, name, comment string, memory bool) (sprite.Checkpoint, error) {
	var out sprite.Checkpoint
	return out, c.do(ctx, "POST", "/v1/sprites/"+url.PathEscape(name)+"/checkpoints", map[string]any{"comment": comment, "memory": memory}, &out)
}

func (c *Client) Checkpoints(ctx context.Context, name string) ([]sprite.Checkpoint, error) {
	var out []sprite.Checkpoint
	return out, c.do(ctx, "GET", "/v1/sprites/"+url.PathEscape(name)+"/checkpoints", nil, &out)
}

func (c *Client) Checkpoint(ctx context.Context, name, id string) (sprite.Checkpoint, error) {
	var out sprite.Checkpoint
	return out, c.do(ctx, "GET", "/v1/sprites/"+url.PathEscape(name)+"/checkpoints/"+url.PathEscape(id), nil, &out)
}

func (c *Client) DeleteCheckpoint(ctx context.Context, name, id string) error {
	return c.do(ctx, "DELETE", "/v1/sprites/"+url.PathEscape(name)+"/checkpoints/"+url.PathEscape(id), nil, nil)
}

func (c *Client) Restore(ctx context.Context, name, id string) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "POST", "/v1/sprites/"+url.PathEscape(name)+"/restore", map[string]string{"id": id}, &out)
}

func (c *Client) Fork(ctx context.Context, name, from, newName string) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "POST", "/v1/sprites/"+url.PathEscape(name)+"/fork", map[string]string{"name": newName, "from": from}, &out)
}

// Image describes one image.
func (c *Client) Image(ctx context.Context, name string) (image.Info, error) {
	var out image.Info
	return out, c.do(ctx, "GET", "/v1/images/"+url.PathEscape(name), nil, &out)
}

// SaveImage makes image name from sprite's disk as it is now (a reflink).
// recipe, when not nil, records how the sprite was made.
func (c *Client) SaveImage(ctx context.Context, name, sprite string, recipe *image.Recipe) (image.Info, error) {
	var out image.Info
	body := map[string]any{"sprite": sprite}
	if recipe != nil {
		body["recipe"] = recipe
	}
	return out, c.do(ctx, "POST", "/v1/images/"+url.PathEscape(name)+"/save", body, &out)
}

// RemoveImage removes an image of one's own.
func (c *Client) RemoveImage(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/images/"+url.PathEscape(name), nil, nil)
}

// URL returns a sprite's URL on the front door (a signed one, with a
// credential valid for ttlSeconds, when signed).
func (c *Client) URL(ctx context.Context, name string, port int, signed bool, ttlSeconds int) (URLInfo, error) {
	var out URLInfo
	body := map[string]any{"port": port, "signed": signed, "ttl_seconds": ttlSeconds}
	return out, c.do(ctx, "POST", "/v1/sprites/"+url.PathEscape(name)+"/url", body, &out)
}

// URLInfo is a sprite's URL on the front door.
type URLInfo struct {
	URL       string    `json:"url"`
	PathURL   string    `json:"path_url"`
	Sprite    string    `json:"sprite"`
	Port      int       `json:"port"`
	Public    bool      `json:"public"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// SetURLPublic makes a sprite's URL answer anyone (true) or only requests
// with a credential (false).
func (c *Client) SetURLPublic(ctx context.Context, name string, public bool) (sprite.Sprite, error) {
	var out sprite.Sprite
	return out, c.do(ctx, "PATCH", "/v1/sprites/"+url.PathEscape(name), map[string]bool{"url_public": public}, &out)
}

// Connect opens a TCP connection to port in the sprite, through wispd
// (which wakes or starts the sprite, and keeps it awake while the
// connection is open).
func (c *Client) Connect(ctx context.Context, name string, port int) (net.Conn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://wispd/v1/sprites/%s/connect?port=%d", url.PathEscape(name), port), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "tcp")
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, decodeError(resp)
	}
	conn.SetDeadline(time.Time{})
	return &bufConn{Conn: conn, r: br}, nil
}

// bufConn is a connection whose first bytes may sit in a reader already.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite half-closes the connection: no more bytes from this side.
func (b *bufConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}

// Services lists a sprite's services and, when it runs, their state.
func (c *Client) Services(ctx context.Context, name string) ([]sprite.ServiceStatus, error) {
	var out []sprite.ServiceStatus
	return out, c.do(ctx, "GET", "/v1/sprites/"+url.PathEscape(name)+"/services", nil, &out)
}

// AddService records a service of the sprite and starts it (starting the
// sprite when it is stopped).
func (c *Client) AddService(ctx context.Context, name string, sv sprite.Service) (sprite.ServiceStatus, error) {
	var out sprite.ServiceStatus
	body := map[string]any{"name": sv.Name, "cmd": sv.Cmd, "dir": sv.Dir, "env": sv.Env, "user": sv.User, "port": sv.Port}
	return out, c.do(ctx, "POST", "/v1/sprites/"+url.PathEscape(name)+"/services", body, &out)
}

// RemoveService stops a service and forgets it.
func (c *Client) RemoveService(ctx context.Context, name, svc string) error {
	return c.do(ctx, "DELETE", "/v1/sprites/"+url.PathEscape(name)+"/services/"+url.PathEscape(svc), nil, nil)
}

// ServiceLogs returns the output the sprite kept of a service (its last
// 256 KiB).
func (c *Client) ServiceLogs(ctx context.Context, name, svc string) (io.ReadCloser, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://wispd/v1/sprites/"+url.PathEscape(name)+"/services/"+url.PathEscape(svc)+"/logs", nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, unwrapURL(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp.Body, nil
}
