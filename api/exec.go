package api

import "time"

// Exec over WebSocket: GET /v1/sprites/{name}/exec upgrades to a WebSocket
// that speaks the Sprites exec framing.
//
// Query: cmd (repeated: argv), tty, stdin, env (repeated KEY=VALUE), dir,
// user, cols, rows, id (attach to an existing session instead of starting
// one), max_run_after_disconnect (a Go duration; absent: run until the
// command ends; "0": end with the client).
//
// Binary frames carry a stream byte then data: client to server StreamStdin
// and StreamStdinEOF; server to client StreamStdout, StreamStderr and, last,
// StreamExit with one byte of exit code (128+N for signal N). Text frames
// carry JSON: the client sends ResizeMessage; the server's first frame is a
// SessionMessage naming the session, so a client can detach and attach later.
const (
	StreamStdin    byte = 0
	StreamStdout   byte = 1
	StreamStderr   byte = 2
	StreamExit     byte = 3
	StreamStdinEOF byte = 4
)

// CloseDetached is the WebSocket close code the server sends an exec
// client whose session another client attached to (the session runs on).
const CloseDetached = 4000

// ResizeMessage is a client text frame: the terminal's new size.
type ResizeMessage struct {
	Type string `json:"type"` // "resize"
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
}

// SessionMessage is the server's first text frame on an exec WebSocket.
type SessionMessage struct {
	Type string `json:"type"` // "session"
	ID   string `json:"id"`
}

// Session is one exec session in a sprite: GET /v1/sprites/{name}/sessions
// lists them, DELETE /v1/sprites/{name}/sessions/{id} kills one, and
// GET /v1/sprites/{name}/exec?id=ID attaches (replaying what it printed
// while nobody was attached, from a bounded buffer, then following).
type Session struct {
	ID       string    `json:"id"`
	Command  []string  `json:"command"`
	TTY      bool      `json:"tty"`
	Started  time.Time `json:"started"`
	Attached bool      `json:"attached"`
	Running  bool      `json:"running"`
	ExitCode *int      `json:"exit_code,omitempty"`
	// MaxRunAfterDisconnect is how long it runs on once no client is
	// attached; nil: until it ends.
	MaxRunAfterDisconnect *Duration `json:"max_run_after_disconnect,omitempty"`
}

// Duration is a time.Duration that travels as a Go duration string ("10s").
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}
