package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// fakeExec is an ExecBackend whose one session echoes stdin to stdout
// and records what it was sent.
type fakeExec struct {
	mu      sync.Mutex
	req     api.ExecRequest
	resizes [][2]int
	closed  chan struct{}
	out     chan []byte
	// stdinErr, when set, is what Stdin answers (a command that exited).
	stdinErr error
}

func (f *fakeExec) Start(_ context.Context, _ string, req api.ExecRequest) (ExecSession, error) {
	f.req = req
	return f, nil
}
func (f *fakeExec) Attach(context.Context, string, api.ExecRequest) (ExecSession, error) {
	return nil, fmt.Errorf("no such session: %w", errdefs.ErrNotFound)
}
func (f *fakeExec) ID() string { return "fake-1" }
func (f *fakeExec) Next() (byte, []byte, error) {
	select {
	case p, ok := <-f.out:
		if !ok {
			return api.StreamExit, []byte{5}, nil
		}
		return api.StreamStdout, p, nil
	case <-f.closed:
		return 0, nil, errors.New("closed")
	}
}
func (f *fakeExec) Stdin(p []byte) error {
	if f.stdinErr != nil {
		return f.stdinErr
	}
	f.out <- append([]byte(nil), p...)
	return nil
}
func (f *fakeExec) CloseStdin() error { close(f.out); return nil }
func (f *fakeExec) Resize(c, r int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resizes = append(f.resizes, [2]int{c, r})
	return nil
}
func (f *fakeExec) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.closed:
	default:
		close(f.closed)
	}
	return nil
}

func execServer(t *testing.T) (*fakeExec, string) {
	f := &fakeExec{closed: make(chan struct{}), out: make(chan []byte, 16)}
	s := &Server{Log: slog.New(slog.DiscardHandler), Exec: f}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return f, hs.URL
}

func dialExec(t *testing.T, base string, q url.Values) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(t.Context(), base+"/v1/sprites/s/exec?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(api.MaxExecMessage)
	typ, p, err := c.Read(t.Context())
	var m api.SessionMessage
	if err != nil || typ != websocket.MessageText || json.Unmarshal(p, &m) != nil || m.ID != "fake-1" {
		t.Fatalf("first message: %v %q %v", typ, p, err)
	}
	return c
}

// TestExecWebSocket: the framing of api/exec.go end to end through the
// handler: the session message, stdin and its end, resizes, output, and
// the exit last.
func TestExecWebSocket(t *testing.T) {
	f, base := execServer(t)
	c := dialExec(t, base, api.ExecRequest{Cmd: []string{"cat"}, Stdin: true, TTY: true, Cols: 80, Rows: 24, Env: []string{"A=1"}}.Query())
	ctx := t.Context()
	rs, _ := json.Marshal(api.ResizeMessage{Type: "resize", Cols: 100, Rows: 30})
	c.Write(ctx, websocket.MessageText, rs)
	c.Write(ctx, websocket.MessageBinary, append([]byte{api.StreamStdin}, "hello"...))
	c.Write(ctx, websocket.MessageBinary, []byte{api.StreamStdinEOF})
	var got []byte
	for {
		typ, p, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, got)
		}
		if typ != websocket.MessageBinary || len(p) == 0 {
			t.Fatalf("message %v %q", typ, p)
		}
		if p[0] == api.StreamExit {
			if len(p) != 2 || p[1] != 5 {
				t.Fatalf("exit message %q", p)
			}
			break
		}
		got = append(got, p[1:]...)
	}
	if string(got) != "hello" {
		t.Errorf("stdout %q", got)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("after the exit: %v, want a normal close", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.resizes) != 1 || f.resizes[0] != [2]int{100, 30} {
		t.Errorf("resizes %v", f.resizes)
	}
	if !f.req.TTY || !f.req.Stdin || f.req.Cols != 80 || f.req.Rows != 24 || len(f.req.Env) != 1 || f.req.Cmd[0] != "cat" {
		t.Errorf("request %+v", f.req)
	}
}

// TestExecStdinAfterExit: stdin the command can no longer take does not
// detach its client: the exit still arrives.
func TestExecStdinAfterExit(t *testing.T) {
	f, base := execServer(t)
	f.stdinErr = errors.New("the command has exited")
	c := dialExec(t, base, url.Values{"cmd": {"true"}, "stdin": {"true"}})
	ctx := t.Context()
	c.Write(ctx, websocket.MessageBinary, append([]byte{api.StreamStdin}, "late"...))
	c.Write(ctx, websocket.MessageBinary, []byte{api.StreamStdinEOF})
	_, p, err := c.Read(ctx)
	if err != nil || len(p) != 2 || p[0] != api.StreamExit || p[1] != 5 {
		t.Fatalf("got %q %v, want the exit", p, err)
	}
}

// TestExecWebSocketBounds: what a client sends is bounded: a message over
// the limit, an unknown stream byte and a resize out of range each end the
// connection, and the session is let go.
func TestExecWebSocketBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		msg  []byte
		want websocket.StatusCode
	}{
		{"too big", websocket.MessageBinary, make([]byte, api.MaxExecMessage+1), websocket.StatusMessageTooBig},
		{"stream byte", websocket.MessageBinary, []byte{api.StreamStdout, 'x'}, websocket.StatusPolicyViolation},
		{"resize", websocket.MessageText, []byte(`{"type":"resize","cols":0,"rows":99999}`), websocket.StatusPolicyViolation},
		{"text", websocket.MessageText, []byte(`hello`), websocket.StatusPolicyViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, base := execServer(t)
			c := dialExec(t, base, url.Values{"cmd": {"cat"}, "stdin": {"true"}})
			c.Write(t.Context(), tc.typ, tc.msg)
			_, _, err := c.Read(t.Context())
			if websocket.CloseStatus(err) != tc.want {
				t.Errorf("got %v, want close %d", err, tc.want)
			}
			<-f.closed
		})
	}
}

func TestExecBadRequests(t *testing.T) {
	_, base := execServer(t)
	for _, tc := range []struct {
		base, query string
		status      int
		code        string
	}{
		{base, "", 400, api.CodeInvalid},
		{base, "cmd=x&cols=0", 400, api.CodeInvalid},
		{base, "cmd=x&env=NOEQUALS", 400, api.CodeInvalid},
		{base, "cmd=x&max_run_after_disconnect=-1s", 400, api.CodeInvalid},
		{base, "id=abc", 404, api.CodeNotFound}, // the fake backend has no sessions to attach to
	} {
		resp, err := http.Get(tc.base + "/v1/sprites/s/exec?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e api.ErrorBody
		json.Unmarshal(b, &e)
		if resp.StatusCode != tc.status || e.Error.Code != tc.code {
			t.Errorf("%q: %d %s, want %d %s", tc.query, resp.StatusCode, b, tc.status, tc.code)
		}
	}
}
