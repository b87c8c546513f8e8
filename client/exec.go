package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/wisp-sh/wisp/api"
)

// Cmd is a program to run in a sprite, in the manner of os/exec.Cmd: set
// its fields, then Run it (or Start and Wait). It runs over one exec
// WebSocket (api/exec.go). A Cmd cannot be reused.
type Cmd struct {
	// Args is the command line; Args[0] is the program, looked up in the
	// sprite's PATH.
	Args []string
	// Env is KEY=VALUE added to the sprite's environment (its own env
	// and secrets are there already).
	Env []string
	// Dir is the working directory ("": the user's home); User the
	// user to run as ("": "sprite" where it exists, else root).
	Dir  string
	User string

	// Stdin is the program's standard input; nil: empty. A reader that
	// is not done when the program exits is left behind (its goroutine
	// ends at its next read).
	Stdin io.Reader
	// Stdout and Stderr take the program's output; nil: discarded. With
	// TTY, everything arrives on Stdout.
	Stdout io.Writer
	Stderr io.Writer

	// TTY runs the program on a pseudo-terminal of Cols x Rows (0: the
	// guest's default); Resize changes its size later.
	TTY        bool
	Cols, Rows int

	// Detachable makes the program a session that outlives its client:
	// when its WebSocket closes (Detach, ctx ends, this process dies) it
	// runs on, for MaxRunAfterDisconnect if that is set, and a client
	// can attach to it again (Sprite.Attach with SessionID). Without it
	// the program ends with its WebSocket, as an os/exec program ends
	// with its context.
	Detachable            bool
	MaxRunAfterDisconnect time.Duration

	s        *Sprite
	ctx      context.Context
	conn     *websocket.Conn
	id       string
	attach   bool // Start attaches to session id
	done     chan struct{}
	detached atomic.Bool // Detach was called
	code     int         // the exit code, -1 until known
	err      error       // why the output stream ended without an exit
}

// Command returns a Cmd that runs name with args in the sprite.
func (s *Sprite) Command(name string, args ...string) *Cmd {
	return s.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command whose program is killed (its WebSocket
// closed) when ctx ends before it does.
func (s *Sprite) CommandContext(ctx context.Context, name string, args ...string) *Cmd {
	return &Cmd{Args: append([]string{name}, args...), s: s, ctx: ctx, code: -1}
}

// Attach returns a Cmd that attaches to session id of the sprite (see
// Cmd.Detachable and Sessions): set its Stdin, Stdout, Stderr (and, for
// a terminal, Cols and Rows), then Run it. It first gets what the session
// printed that the guest kept (its last 1 MiB of output), then follows;
// Wait returns at the session's exit, or ErrDetached when another client
// attaches. A client attached before is detached.
func (s *Sprite) Attach(ctx context.Context, id string) *Cmd {
	return &Cmd{s: s, ctx: ctx, code: -1, id: id, attach: true}
}

// ErrDetached is what Wait returns when another client attached to the
// program's session: the program runs on.
var ErrDetached = errors.New("detached: another client attached to the session")

// Sessions lists the sprite's exec sessions, oldest first.
func (s *Sprite) Sessions(ctx context.Context) ([]api.Session, error) {
	var out []api.Session
	return out, s.c.do(ctx, "GET", s.path("/sessions"), nil, &out)
}

// KillSession ends session id (TERM, then KILL after a grace period, to
// its process group) and forgets it; it returns once the session ended.
func (s *Sprite) KillSession(ctx context.Context, id string) error {
	return s.c.do(ctx, "DELETE", s.path("/sessions/"+esc(id)), nil, nil)
}

// SignalSession sends signal sig ("INT", "TERM", ...) to the process
// group of session id.
func (s *Sprite) SignalSession(ctx context.Context, id, sig string) error {
	return s.c.do(ctx, "DELETE", s.path("/sessions/"+esc(id)+"?signal="+url.QueryEscape(sig)), nil, nil)
}

// ExitError is the error of a program that exited with a code other than
// 0 (128+N when signal N killed it).
type ExitError struct {
	Code int
	// Stderr holds the program's standard error when Output collected
	// it (Cmd.Stderr was nil).
	Stderr []byte
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode returns the program's exit code, or -1 if it has not exited
// (or the stream broke first).
func (c *Cmd) ExitCode() int { return c.code }

// SessionID names the exec session the daemon started (after Start).
func (c *Cmd) SessionID() string { return c.id }

// Run starts the program and waits for it.
func (c *Cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the program and returns its standard output.
func (c *Cmd) Output() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("client: Stdout already set")
	}
	var out, errb bytes.Buffer
	c.Stdout = &out
	collect := c.Stderr == nil
	if collect {
		c.Stderr = &errb
	}
	err := c.Run()
	var ee *ExitError
	if collect && errors.As(err, &ee) {
		ee.Stderr = errb.Bytes()
	}
	return out.Bytes(), err
}

// CombinedOutput runs the program and returns its standard output and
// standard error together.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("client: Stdout or Stderr already set")
	}
	var b syncBuffer
	c.Stdout, c.Stderr = &b, &b
	err := c.Run()
	return b.b.Bytes(), err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// StdinPipe returns a pipe whose writes are the program's standard input;
// closing it sends end-of-file. Call it before Start.
func (c *Cmd) StdinPipe() (io.WriteCloser, error) {
	if c.Stdin != nil {
		return nil, errors.New("client: Stdin already set")
	}
	if c.conn != nil {
		return nil, errors.New("client: StdinPipe after Start")
	}
	pr, pw := io.Pipe()
	c.Stdin = pr
	return pw, nil
}

// Start starts the program; Wait waits for it.
func (c *Cmd) Start() error {
	if c.conn != nil {
		return errors.New("client: already started")
	}
	req := api.ExecRequest{Cmd: c.Args, Env: c.Env, Dir: c.Dir, User: c.User, TTY: c.TTY, Stdin: c.Stdin != nil, Cols: c.Cols, Rows: c.Rows}
	switch {
	case c.attach:
		req = api.ExecRequest{ID: c.id, Cols: c.Cols, Rows: c.Rows}
	case len(c.Args) == 0:
		return errors.New("client: no command")
	case !c.Detachable:
		var zero time.Duration
		req.MaxRunAfterDisconnect = &zero
	case c.MaxRunAfterDisconnect > 0:
		req.MaxRunAfterDisconnect = &c.MaxRunAfterDisconnect
	}
	conn, err := c.s.c.dialExec(c.ctx, c.s.path("/exec?"+req.Query().Encode()))
	if err != nil {
		return err
	}
	conn.SetReadLimit(api.MaxExecMessage)
	// The first message names the session.
	typ, p, err := conn.Read(c.ctx)
	var hello api.SessionMessage
	if err == nil && (typ != websocket.MessageText || json.Unmarshal(p, &hello) != nil || hello.Type != "session") {
		err = errors.New("the daemon did not open an exec session")
	}
	if err != nil {
		conn.CloseNow()
		return fmt.Errorf("exec: %w", err)
	}
	c.conn, c.id, c.done = conn, hello.ID, make(chan struct{})
	if c.Stdin != nil {
		go c.sendStdin()
	}
	go c.readOutput()
	return nil
}

// Wait waits for the program to exit and its output to be copied. It
// returns nil for exit code 0, an *ExitError for another.
func (c *Cmd) Wait() error {
	if c.conn == nil {
		return errors.New("client: not started")
	}
	<-c.done
	if c.err != nil {
		return c.err
	}
	if c.code != 0 {
		return &ExitError{Code: c.code}
	}
	return nil
}

// Detach closes the program's WebSocket without waiting for it: a
// Detachable program runs on (Wait then returns ErrDetached); another
// ends.
func (c *Cmd) Detach() error {
	if c.conn == nil {
		return errors.New("client: not started")
	}
	c.detached.Store(true)
	return c.conn.Close(websocket.StatusNormalClosure, "detach")
}

// Resize changes the terminal's size (TTY).
func (c *Cmd) Resize(cols, rows int) error {
	if c.conn == nil {
		return errors.New("client: not started")
	}
	b, _ := json.Marshal(api.ResizeMessage{Type: "resize", Cols: cols, Rows: rows})
	return c.conn.Write(c.ctx, websocket.MessageText, b)
}

func (c *Cmd) sendStdin() {
	buf := make([]byte, 1+32<<10)
	buf[0] = api.StreamStdin
	for {
		n, err := c.Stdin.Read(buf[1:])
		if n > 0 {
			if c.conn.Write(c.ctx, websocket.MessageBinary, buf[:1+n]) != nil {
				return
			}
		}
		if err != nil {
			// End of input, or a reader that failed: either way the
			// program sees end-of-file.
			c.conn.Write(c.ctx, websocket.MessageBinary, []byte{api.StreamStdinEOF})
			return
		}
	}
}

func (c *Cmd) readOutput() {
	defer close(c.done)
	defer c.conn.CloseNow()
	stdout, stderr := orDiscard(c.Stdout), orDiscard(c.Stderr)
	for {
		typ, p, err := c.conn.Read(c.ctx)
		if err != nil {
			if c.code >= 0 {
				return // the daemon closes after the exit
			}
			if c.detached.Load() || websocket.CloseStatus(err) == api.CloseDetached {
				c.err = ErrDetached
				return
			}
			if ctxErr := c.ctx.Err(); ctxErr != nil {
				err = ctxErr
			}
			c.err = fmt.Errorf("exec: the stream ended without an exit status: %w", err)
			return
		}
		if typ != websocket.MessageBinary || len(p) == 0 || c.code >= 0 {
			continue
		}
		var werr error
		switch p[0] {
		case api.StreamStdout:
			_, werr = stdout.Write(p[1:])
		case api.StreamStderr:
			_, werr = stderr.Write(p[1:])
		case api.StreamExit:
			if len(p) != 2 {
				c.err = errors.New("exec: bad exit message")
				return
			}
			// The exit is the last message: done, without waiting for
			// the daemon's close (the round trip is a client's latency).
			c.code = int(p[1])
			return
		}
		if werr != nil {
			c.err = fmt.Errorf("exec: copy output: %w", werr)
			return
		}
	}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// dialExec opens the exec WebSocket at path.
func (c *Client) dialExec(ctx context.Context, path string) (*websocket.Conn, error) {
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	conn, resp, err := websocket.Dial(ctx, c.url(path), &websocket.DialOptions{HTTPClient: c.hc, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 && resp.Body != nil {
			return nil, decodeError(resp)
		}
		return nil, c.netErr(err)
	}
	return conn, nil
}
