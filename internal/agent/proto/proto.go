// Package proto holds the wire types shared by the host and the guest agent.
//
// The channel between host and guest is one byte stream (virtio-serial, or a
// unix socket for gVisor). After a handshake (Hello/Ready lines carrying a
// nonce) it is multiplexed with yamux; the host is the yamux client. Every
// yamux stream carries frames: a 1-byte type, a 4-byte big-endian length and
// the payload. The first frame on a stream is a TRequest from the host; what
// follows depends on the request's Op (see the Op constants).
//
// The guest is hostile: every reader of frames bounds the payload size.
package proto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Frame types.
const (
	TRequest    byte = 1  // host->guest, JSON Request, first frame of a stream
	TResponse   byte = 2  // guest->host, JSON Response
	TStdin      byte = 3  // host->guest, raw bytes for the process's stdin
	TCloseStdin byte = 4  // host->guest, empty: stdin reached EOF
	TStdout     byte = 5  // guest->host, raw bytes
	TStderr     byte = 6  // guest->host, raw bytes
	TResize     byte = 7  // host->guest, JSON Resize
	TSignal     byte = 8  // host->guest, JSON Signal
	TExit       byte = 9  // guest->host, JSON Exit; last frame of an exec
	TData       byte = 10 // either way, raw bytes of a file or tar stream
	TEnd        byte = 11 // either way, empty: the data stream is complete
)

// MaxFrame bounds a frame's payload. Writers split larger data.
const MaxFrame = 1 << 20

// ChunkSize is the payload size writers use for bulk data.
const ChunkSize = 256 << 10

// Handshake lines, each followed by a 16-hex-digit nonce and "\n". The host
// sends Hello (repeatedly, until answered), the guest answers the first
// Hello of a nonce with Ready and ignores repeats, and the host sends Go.
// Yamux starts on both sides right after Go, so no handshake line is ever
// read by yamux, and bytes left from an earlier session are skipped by the
// line scanners on both sides.
const (
	Hello = "WISP-HELLO "
	Ready = "WISP-READY "
	Go    = "WISP-GO "
)

// NonceLen is the length of a handshake nonce in hex digits.
const NonceLen = 16

// ScanLine reads r one byte at a time (so nothing beyond the line is
// consumed) until a line ends with prefix followed by a valid nonce, and
// returns the nonce. Other bytes are skipped, at most max of them. Reading
// zero bytes with a nil error or io.EOF calls onEOF, which may return an
// error to stop or nil to go on reading.
func ScanLine(r io.Reader, max int, onEOF func() error, prefixes ...string) (prefix, nonce string, err error) {
	line := make([]byte, 0, 64)
	var one [1]byte
	for n := 0; n < max; {
		k, err := r.Read(one[:])
		if k == 0 {
			if err == nil || errors.Is(err, io.EOF) {
				if onEOF == nil {
					return "", "", io.EOF
				}
				if err := onEOF(); err != nil {
					return "", "", err
				}
				continue
			}
			return "", "", err
		}
		n++
		if one[0] != '\n' {
			if len(line) == cap(line) {
				copy(line, line[1:])
				line = line[:len(line)-1]
			}
			line = append(line, one[0])
			continue
		}
		for _, p := range prefixes {
			want := len(p) + NonceLen
			if len(line) < want || string(line[len(line)-want:len(line)-NonceLen]) != p {
				continue
			}
			cand := string(line[len(line)-NonceLen:])
			if isHex(cand) {
				return p, cand, nil
			}
		}
		line = line[:0]
	}
	return "", "", fmt.Errorf("no handshake line in %d bytes", max)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Ops a Request may name.
const (
	OpExec = "exec" // then stdin/resize/signal frames in; stdout/stderr frames and one TExit out
	OpInfo = "info" // TResponse with Info
	OpStat = "stat" // TResponse with File
	OpList = "list" // TResponse with Files
	// OpStats describes several paths in one round trip: TResponse with
	// Files, one for each of Request.Paths that exists (its Name the
	// path), in order; a path ending in "/*" is instead one for each entry
	// of that folder (Name folder/entry), none when it is missing. At most
	// MaxList in all (then Truncated). A path that exists but cannot be
	// read is an error response. Guests older than this op answer it with
	// an error of KindInvalid.
	OpStats    = "stats"
	OpMkdir    = "mkdir"    // TResponse
	OpRemove   = "remove"   // TResponse
	OpRead     = "read"     // TResponse with File, then TData... TEnd (or TResponse with Error)
	OpWrite    = "write"    // host sends TData... TEnd, then TResponse
	OpTarOut   = "tar-out"  // TResponse, then TData (a tar stream of Path)... TEnd
	OpTarIn    = "tar-in"   // host sends TData (a tar stream to unpack in Path)... TEnd, then TResponse
	OpSync     = "sync"     // flush filesystems; TResponse
	OpShutdown = "shutdown" // sync and remount read-only before the VMM stops; TResponse
	OpSetTime  = "settime"  // set the guest clock to Request.Time and reseed; TResponse
	OpFreeze   = "freeze"   // freeze the root filesystem (thawed by OpThaw, or by itself after FreezeLimit); TResponse
	OpThaw     = "thaw"     // thaw it; TResponse
	OpIdentity = "identity" // take Request.Hostname, MachineID, MAC, Pids, Address and Gateway, reseed with Seed, set the clock to Time; TResponse
)

// FreezeLimit is how long the guest stays frozen without a thaw: a host
// that dies mid-checkpoint must not leave it frozen.
const FreezeLimit = 10 * time.Second

// Request is the first frame of every stream.
type Request struct {
	Op        string       `json:"op"`
	Exec      *ExecRequest `json:"exec,omitempty"`
	Path      string       `json:"path,omitempty"`
	Paths     []string     `json:"paths,omitempty"` // OpStats
	Mode      uint32       `json:"mode,omitempty"`
	Recursive bool         `json:"recursive,omitempty"`
	User      string       `json:"user,omitempty"` // owner for write/mkdir/tar-in; default the sprite user
	Time      time.Time    `json:"time,omitzero"`
	Seed      []byte       `json:"seed,omitempty"`
	Hostname  string       `json:"hostname,omitempty"`
	MachineID string       `json:"machine_id,omitempty"`
	MAC       string       `json:"mac,omitempty"`
	Pids      int          `json:"pids,omitempty"` // the process limit (identity)
	// Address ("10.229.0.6/30") and Gateway (also the DNS server): the
	// network a restored guest takes (OpIdentity).
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// Services is the whole set of services the guest is to run
	// (OpServices).
	Services []Service `json:"services,omitempty"`
	// Session names or starts an exec session (the OpSession* ops).
	Session *SessionRequest `json:"session,omitempty"`
}

// Ops of services (see Service).
const (
	// OpServices makes Request.Services the guest's services: new or
	// changed ones start, running ones with the same definition go on,
	// the others stop. TResponse with Services, the state of each.
	OpServices = "services"
	// OpServiceLogs: TResponse, then TData (the kept output of service
	// Request.Path)... TEnd.
	OpServiceLogs = "service-logs"
)

// Service is a long-running process the agent supervises: started with
// /bin/sh -c Cmd in a process group of its own, restarted when it ends.
type Service struct {
	Name string   `json:"name"`
	Cmd  string   `json:"cmd"`
	Dir  string   `json:"dir,omitempty"`  // default: the user's home
	Env  []string `json:"env,omitempty"`  // KEY=VALUE, added to the user's defaults
	User string   `json:"user,omitempty"` // default: "sprite" if it exists, else root
	Port int      `json:"port,omitempty"` // what it listens on (the host's business)
}

// Service states.
const (
	ServiceRunning = "running" // its process runs
	ServiceBackoff = "backoff" // it ended (or could not start) and starts again after a pause
	ServiceExited  = "exited"  // it ended and is not started again (the sprite is shutting down)
)

// ServiceState is what the agent reports of one service.
type ServiceState struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Pid       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	StartedAt time.Time `json:"started_at,omitzero"` // of the current (or last) process
	LastExit  string    `json:"last_exit,omitempty"` // "exit 1", "signal KILL", or why it could not start
	// LogBytes is how much output it has written in all; the guest keeps
	// the last ServiceLogKeep bytes.
	LogBytes int64 `json:"log_bytes"`
}

// ServiceLogKeep is how much output the guest keeps per service.
const ServiceLogKeep = 256 << 10

// Ops of exec sessions: processes that outlive the stream that started
// them. The guest keeps each session's output (stdout and stderr frames,
// in order, at most SessionKeep bytes of the latest) so a host stream can
// attach later, and ends a session nobody is attached to once its
// MaxRunAfterDisconnect has passed.
const (
	// OpSessionStart starts Request.Exec as a session with the options in
	// Request.Session and attaches the stream to it: TResponse with the
	// session (Sessions[0]), then as OpSessionAttach. A command that
	// cannot start makes a session that has ended (Exit 126 or 127).
	OpSessionStart = "session-start"
	// OpSessionAttach attaches the stream to session Request.Session.ID:
	// TResponse with the session, then TStdout and TStderr frames (the
	// kept output, then live) and TExit once it has ended and its output
	// is sent; or TEnd, when another stream took the session over. The
	// host sends TStdin, TCloseStdin, TResize and TSignal; closing the
	// stream detaches. One stream is attached at a time: an attach takes
	// the session from the stream that had it.
	OpSessionAttach = "session-attach"
	// OpSessionList: TResponse with Sessions, oldest first.
	OpSessionList = "session-list"
	// OpSessionKill sends Request.Session.Signal to the process group of
	// session Request.Session.ID; empty, it ends the group (TERM, then
	// KILL after a grace period), forgets the session and answers once
	// the process has ended (a stream attached still gets its exit).
	// TResponse.
	OpSessionKill = "session-kill"
)

// Bounds of sessions. The guest keeps a session that has ended until a
// stream attached to it has been sent its exit, or for SessionLinger, or
// until a new session needs its place.
const (
	MaxSessions   = 64
	SessionKeep   = 1 << 20
	SessionLinger = 10 * time.Minute
	SessionIDLen  = 12 // lowercase hex digits
)

// ValidSessionID reports whether id is SessionIDLen lowercase hex digits.
func ValidSessionID(id string) bool { return len(id) == SessionIDLen && isHex(id) }

// SessionRequest is Request.Session.
type SessionRequest struct {
	ID string `json:"id,omitempty"` // attach and kill
	// Stdin gives the process a stdin the host writes to; without it,
	// stdin is /dev/null (a TTY session always has its terminal).
	Stdin bool `json:"stdin,omitempty"`
	// MaxRunAfterDisconnect is how long the session runs on once no
	// stream is attached, before its process group is killed; nil: until
	// it ends; 0: it ends with its stream.
	MaxRunAfterDisconnect *time.Duration `json:"max_run_after_disconnect,omitempty"`
	Signal                string         `json:"signal,omitempty"` // kill
	// Expect is a precondition of a start: the guest starts the process
	// only while OpStats of Expect.Paths gives Expect.Stamp (StatsStamp);
	// else it answers an error of KindStale and starts nothing. Guests
	// older than OpStats ignore it: a host sets it only for a guest that
	// has answered OpStats.
	Expect *Expect `json:"expect,omitempty"`
}

// Expect is SessionRequest.Expect.
type Expect struct {
	Paths []string `json:"paths"`
	Stamp string   `json:"stamp"`
}

// StatsStamp describes what OpStats answered (the files that exist, with
// their times and sizes) in one string: equal stamps of the same paths
// mean files unchanged.
func StatsStamp(files []FileInfo) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "%s=%s/%d;", f.Name, f.ModTime.UTC().Format(time.RFC3339Nano), f.Size)
	}
	return b.String()
}

// SessionInfo describes one session.
type SessionInfo struct {
	ID                    string         `json:"id"`
	Argv                  []string       `json:"argv"`
	TTY                   bool           `json:"tty,omitempty"`
	Stdin                 bool           `json:"stdin,omitempty"`
	Started               time.Time      `json:"started"`
	Attached              bool           `json:"attached,omitempty"`
	MaxRunAfterDisconnect *time.Duration `json:"max_run_after_disconnect,omitempty"`
	// Exit is set once the process has ended and its output is kept.
	Exit *Exit `json:"exit,omitempty"`
	// OutputBytes counts all the output it wrote; the guest keeps the
	// last SessionKeep bytes or less (see OpSessionAttach).
	OutputBytes int64 `json:"output_bytes"`
}

// ExecRequest describes a process to start.
type ExecRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`  // KEY=VALUE, added to the user's defaults
	Dir  string   `json:"dir,omitempty"`  // default: the user's home
	User string   `json:"user,omitempty"` // default: "sprite" if it exists, else root
	TTY  bool     `json:"tty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
}

// Resize is the payload of TResize.
type Resize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Signal is the payload of TSignal; Name is like "TERM" or "KILL".
type Signal struct {
	Name string `json:"name"`
}

// Exit is the payload of TExit.
type Exit struct {
	Code   int    `json:"code"`             // exit status, or 128+signal
	Signal string `json:"signal,omitempty"` // set when the process died of a signal
	Error  string `json:"error,omitempty"`  // set when the process could not start (Code 126/127)
}

// FileInfo describes one file in the guest.
type FileInfo struct {
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	Mode    uint32    `json:"mode"` // Unix permission and type bits as Go's fs.FileMode
	ModTime time.Time `json:"mod_time"`
	IsDir   bool      `json:"is_dir"`
	Link    string    `json:"link,omitempty"`
}

// Info describes the running guest.
type Info struct {
	Uptime       float64   `json:"uptime_seconds"`
	Kernel       string    `json:"kernel"`
	Hostname     string    `json:"hostname"`
	MemTotal     uint64    `json:"mem_total_bytes"`
	MemAvailable uint64    `json:"mem_available_bytes"`
	Time         time.Time `json:"time"`
}

// Error kinds a Response may carry in Kind.
const (
	KindNotFound = "not_found"
	KindInvalid  = "invalid"
	KindExists   = "exists"
	KindPerm     = "permission"
	KindLimit    = "limit" // a bound of the guest's (MaxSessions) is reached
	KindStale    = "stale" // a start's precondition (SessionRequest.Expect) does not hold
	KindInternal = "internal"
)

// MaxList bounds the entries of one list response.
const MaxList = 10000

// Response answers a Request.
type Response struct {
	Error     string     `json:"error,omitempty"`
	Kind      string     `json:"kind,omitempty"`
	Info      *Info      `json:"info,omitempty"`
	File      *FileInfo  `json:"file,omitempty"`
	Files     []FileInfo `json:"files,omitempty"`
	Truncated bool       `json:"truncated,omitempty"`
	// Services answers OpServices.
	Services []ServiceState `json:"services,omitempty"`
	// Sessions answers OpSessionList, and OpSessionStart and
	// OpSessionAttach with the one session.
	Sessions []SessionInfo `json:"sessions,omitempty"`
}

// ErrFrameTooLarge is returned for a frame over the reader's bound.
var ErrFrameTooLarge = errors.New("frame too large")

// WriteFrame writes one frame. p must not exceed MaxFrame.
func WriteFrame(w io.Writer, t byte, p []byte) error {
	if len(p) > MaxFrame {
		return fmt.Errorf("write frame type %d: %d bytes: %w", t, len(p), ErrFrameTooLarge)
	}
	var hdr [5]byte
	hdr[0] = t
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	if len(p) == 0 {
		_, err := w.Write(hdr[:])
		return err
	}
	// One write keeps a frame whole on streams shared by goroutines.
	buf := make([]byte, 5+len(p))
	copy(buf, hdr[:])
	copy(buf[5:], p)
	_, err := w.Write(buf)
	return err
}

// WriteJSON writes v as the payload of a frame of type t.
func WriteJSON(w io.Writer, t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return WriteFrame(w, t, b)
}

// ReadFrame reads one frame whose payload is at most max bytes (max <= MaxFrame).
// The returned payload is freshly allocated.
func ReadFrame(r io.Reader, max int) (byte, []byte, error) {
	if max <= 0 || max > MaxFrame {
		max = MaxFrame
	}
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > uint32(max) {
		return 0, nil, fmt.Errorf("frame type %d: %d bytes, limit %d: %w", hdr[0], n, max, ErrFrameTooLarge)
	}
	if hdr[0] < TRequest || hdr[0] > TEnd {
		return 0, nil, fmt.Errorf("unknown frame type %d", hdr[0])
	}
	// A frame up to ChunkSize (bulk data) is read in one allocation; a
	// larger one grows as its bytes arrive, so a peer that announces a
	// large frame and sends little makes the reader hold little.
	p := make([]byte, min(n, ChunkSize))
	for off := 0; ; {
		m, err := io.ReadFull(r, p[off:])
		off += m
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		if off == int(n) {
			return hdr[0], p, nil
		}
		p = append(p, make([]byte, min(int(n)-off, off))...)
	}
}

// DecodeJSON unmarshals a JSON payload into v, rejecting trailing data.
func DecodeJSON(p []byte, v any) error {
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}

// ReadJSON reads one frame, checks its type and decodes it into v.
func ReadJSON(r io.Reader, want byte, max int, v any) error {
	t, p, err := ReadFrame(r, max)
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("got frame type %d, want %d", t, want)
	}
	return DecodeJSON(p, v)
}
