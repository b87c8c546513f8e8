package api

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Bounds of the exec WebSocket, both directions: a message is at most
// MaxExecMessage bytes (a stream byte and up to MaxExecData of data;
// senders split larger data), a terminal at most MaxTermSize cells a side.
const (
	MaxExecData    = 1 << 20
	MaxExecMessage = 1 + MaxExecData
	MaxTermSize    = 10000
)

// CodeNotImplemented answers what this wispd does not do (yet).
const CodeNotImplemented = "not_implemented"

// ExecRequest is what the query of GET /v1/sprites/{name}/exec asks for.
// Query encodes it and ParseExecRequest decodes it, so client and server
// agree.
type ExecRequest struct {
	Cmd   []string // argv; required unless ID is set
	TTY   bool
	Stdin bool     // the client sends stdin; false: stdin is empty
	Env   []string // KEY=VALUE, over the sprite's own
	Dir   string
	User  string
	Cols  int // the terminal's size (TTY)
	Rows  int
	// ID attaches to an existing session instead of starting one.
	ID string
	// MaxRunAfterDisconnect is how long the command runs on once no
	// client is attached; nil: until it ends.
	MaxRunAfterDisconnect *time.Duration
}

// Query returns r as the exec URL's query.
func (r ExecRequest) Query() url.Values {
	q := url.Values{}
	for _, a := range r.Cmd {
		q.Add("cmd", a)
	}
	for _, e := range r.Env {
		q.Add("env", e)
	}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	if r.TTY {
		q.Set("tty", "true")
	}
	if r.Stdin {
		q.Set("stdin", "true")
	}
	set("dir", r.Dir)
	set("user", r.User)
	if r.Cols > 0 {
		q.Set("cols", strconv.Itoa(r.Cols))
	}
	if r.Rows > 0 {
		q.Set("rows", strconv.Itoa(r.Rows))
	}
	set("id", r.ID)
	if r.MaxRunAfterDisconnect != nil {
		q.Set("max_run_after_disconnect", r.MaxRunAfterDisconnect.String())
	}
	return q
}

// ParseExecRequest decodes and checks an exec URL's query.
func ParseExecRequest(q url.Values) (ExecRequest, error) {
	r := ExecRequest{Cmd: q["cmd"], Env: q["env"], Dir: q.Get("dir"), User: q.Get("user"), ID: q.Get("id")}
	var err error
	if r.TTY, err = parseBool(q, "tty"); err != nil {
		return r, err
	}
	if r.Stdin, err = parseBool(q, "stdin"); err != nil {
		return r, err
	}
	if r.Cols, err = parseSize(q, "cols"); err != nil {
		return r, err
	}
	if r.Rows, err = parseSize(q, "rows"); err != nil {
		return r, err
	}
	if v := q.Get("max_run_after_disconnect"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return r, fmt.Errorf("max_run_after_disconnect %q: want a duration such as 10m", v)
		}
		r.MaxRunAfterDisconnect = &d
	}
	if r.ID == "" && len(r.Cmd) == 0 {
		return r, fmt.Errorf("exec needs a command (cmd, repeated) or a session id")
	}
	for _, e := range r.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return r, fmt.Errorf("env %q: want KEY=VALUE", e)
		}
	}
	return r, nil
}

func parseBool(q url.Values, k string) (bool, error) {
	v := q.Get(k)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s %q: want true or false", k, v)
	}
	return b, nil
}

func parseSize(q url.Values, k string) (int, error) {
	v := q.Get(k)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxTermSize {
		return 0, fmt.Errorf("%s %q: want 1-%d", k, v, MaxTermSize)
	}
	return n, nil
}

// Check checks a resize message's values.
func (m ResizeMessage) Check() error {
	if m.Type != "resize" || m.Cols < 1 || m.Rows < 1 || m.Cols > MaxTermSize || m.Rows > MaxTermSize {
		return fmt.Errorf("bad resize message: want type resize and cols, rows 1-%d", MaxTermSize)
	}
	return nil
}
