package guest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// Exec sessions (proto.OpSessionStart): processes that outlive the
// stream that started them. They live in the agent's memory, so they
// survive the host going away (a daemon restart) and a sleep/wake (the
// guest's memory is saved and restored).
//
// One stream is attached to a session at a time; a new attach takes it
// over, and the stream that had it gets TEnd. One writer of stdin and
// one owner of the terminal's size keep input from interleaving, and
// taking over (rather than refusing) lets a client whose connection died
// unnoticed attach again at once, as `tmux attach -d` does.
//
// While a stream is attached, output it has not been sent is never
// dropped: the process waits (its pipe fills) until the stream catches
// up, so an attached client gets every byte. While none is, the oldest
// output is dropped to keep the newest proto.SessionKeep bytes.

// sessionRead is the most a session's output copier reads at once (a
// record of the kept output).
const sessionRead = 64 << 10

// recOverhead is what each kept record is charged beyond its bytes, so
// that many tiny records (a process writing a byte at a time to stdout
// and stderr in turn) are bounded in memory too.
const recOverhead = 64

// maxInfoArgv bounds the bytes of a command a session's description
// carries, so a list of MaxSessions fits in a response frame (even
// with every byte escaped in JSON, 6 bytes each).
const maxInfoArgv = 2 << 10

// takeoverGrace is how long the stream a session is taken from has to
// take its TEnd.
const takeoverGrace = 5 * time.Second

// sessionStream is the stream a session is attached to.
type sessionStream interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// sessionTable holds the sessions of the guest.
type sessionTable struct {
	mu   sync.Mutex
	byID map[string]*session
}

type session struct {
	id      string
	argv    []string
	tty     bool
	stdin   bool
	started time.Time
	maxRun  *time.Duration
	table   *sessionTable

	proc    *process      // set before spawned is closed; nil when it could not start
	spawned chan struct{} // closed once the process is started (or failed to)
	dead    chan struct{} // closed when the process has been reaped

	mu    sync.Mutex
	cond  sync.Cond // on mu: output, exit, attach and detach
	out   outbuf
	att   *attachment
	exit  *proto.Exit // set once it has ended and its output is kept
	ended time.Time
	gen   int         // counts detaches; a max-run timer acts only on its own
	timer *time.Timer // the max run after the last detach
}

// attachment is a stream attached to a session.
type attachment struct {
	st   sessionStream
	next int64 // sequence number of the next output record to send
}

// sessions returns the server's table, made on first use.
func (s *Server) sessions() *sessionTable {
	s.sessOnce.Do(func() { s.sess = &sessionTable{byID: map[string]*session{}} })
	return s.sess
}

// add puts ss in the table under a new id. At MaxSessions it makes room by
// forgetting the session that ended first (and has no stream attached),
// or fails with KindLimit.
func (t *sessionTable) add(ss *session) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byID) >= proto.MaxSessions {
		var oldest *session
		for _, o := range t.byID {
			o.mu.Lock()
			if o.exit != nil && o.att == nil && (oldest == nil || o.ended.Before(oldest.ended)) {
				oldest = o
			}
			o.mu.Unlock()
		}
		if oldest == nil {
			return &kindError{proto.KindLimit, fmt.Errorf("%d sessions run in the sprite, the most it may hold: kill one first", len(t.byID))}
		}
		delete(t.byID, oldest.id)
	}
	for {
		var b [proto.SessionIDLen / 2]byte
		rand.Read(b[:])
		if id := hex.EncodeToString(b[:]); t.byID[id] == nil {
			ss.id = id
			break
		}
	}
	ss.table = t
	t.byID[ss.id] = ss
	return nil
}

func (t *sessionTable) get(id string) (*session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ss := t.byID[id]; ss != nil {
		return ss, nil
	}
	return nil, &kindError{proto.KindNotFound, fmt.Errorf("no session %q in the sprite", id)}
}

// remove forgets ss (if the table still holds it).
func (t *sessionTable) remove(ss *session) {
	t.mu.Lock()
	if t.byID[ss.id] == ss {
		delete(t.byID, ss.id)
	}
	t.mu.Unlock()
}

func (t *sessionTable) list() []proto.SessionInfo {
	t.mu.Lock()
	all := make([]*session, 0, len(t.byID))
	for _, ss := range t.byID {
		all = append(all, ss)
	}
	t.mu.Unlock()
	out := make([]proto.SessionInfo, 0, len(all))
	for _, ss := range all {
		out = append(out, ss.info())
	}
	slices.SortFunc(out, func(a, b proto.SessionInfo) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return cmpString(a.ID, b.ID)
	})
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// startSession serves OpSessionStart: the stream is attached before the
// process starts, so it gets all of the output. The start is answered
// while the process is spawned (a spawn that fails is the session's exit,
// 126 or 127): the answer's write waits for the channel to the host, the
// spawn for the sandbox's kernel, and the host goes on with its side of
// the exec meanwhile; input the host sends waits in the stream. A start
// whose answer could not be written is a session detached at once.
func (s *Server) startSession(st sessionStream, req proto.Request) {
	opt := req.Session
	if opt == nil {
		opt = &proto.SessionRequest{}
	}
	if req.Exec == nil || len(req.Exec.Argv) == 0 {
		proto.WriteJSON(st, proto.TResponse, errResponse(invalid("a session needs a command")))
		return
	}
	if opt.MaxRunAfterDisconnect != nil && *opt.MaxRunAfterDisconnect < 0 {
		proto.WriteJSON(st, proto.TResponse, errResponse(invalid("max run after disconnect %s is negative", *opt.MaxRunAfterDisconnect)))
		return
	}
	if e := opt.Expect; e != nil {
		files, truncated, err := stats(e.Paths)
		if err == nil && (truncated || proto.StatsStamp(files) != e.Stamp) {
			err = &kindError{proto.KindStale, errors.New("the files the start expects have changed")}
		}
		if err != nil {
			proto.WriteJSON(st, proto.TResponse, errResponse(err))
			return
		}
	}
	ss := &session{
		argv:    req.Exec.Argv,
		tty:     req.Exec.TTY,
		stdin:   opt.Stdin || req.Exec.TTY,
		started: time.Now().UTC(),
		maxRun:  opt.MaxRunAfterDisconnect,
		spawned: make(chan struct{}),
		dead:    make(chan struct{}),
		out:     outbuf{max: proto.SessionKeep},
	}
	ss.cond.L = &ss.mu
	if err := s.sessions().add(ss); err != nil {
		proto.WriteJSON(st, proto.TResponse, errResponse(err))
		return
	}
	a := ss.attach(st)
	answered := make(chan bool, 1)
	go func() { answered <- ss.answer(a) }()
	p, failed := s.startProcess(req.Exec, opt.Stdin)
	if failed != nil {
		close(ss.spawned)
		close(ss.dead)
		ss.setExit(*failed)
		if <-answered {
			ss.stream(a)
		}
		return
	}
	ss.proc = p
	close(ss.spawned)
	drain := p.output(sessionRead, ss.write)
	go func() {
		ws := <-p.waitc
		close(ss.dead)
		ss.setExit(p.finish(ws, drain))
	}()
	if !<-answered {
		// The answer's write failed, which does not say the host lacks it
		// (a stream write reports the connection's close even when its
		// bytes went out just before): the session stays, detached, as
		// after any host's going: one that runs only with a client ends
		// now, another runs on, listed and attachable.
		return
	}
	s.Log.Info("session started", "session", ss.id, "pid", p.pid)
	ss.stream(a)
}

// attachSession serves OpSessionAttach.
func (s *Server) attachSession(st sessionStream, req proto.Request) {
	if req.Session == nil {
		proto.WriteJSON(st, proto.TResponse, errResponse(invalid("attach: no session named")))
		return
	}
	ss, err := s.sessions().get(req.Session.ID)
	if err != nil {
		proto.WriteJSON(st, proto.TResponse, errResponse(err))
		return
	}
	a := ss.attach(st)
	if ss.answer(a) {
		ss.stream(a)
	}
}

// killSession serves OpSessionKill: a named signal goes to the session's
// process group; no name ends the group (TERM, then KILL) and forgets the
// session once it has ended (a stream attached still gets its exit).
func (s *Server) killSession(req *proto.SessionRequest) error {
	if req == nil {
		return invalid("kill: no session named")
	}
	ss, err := s.sessions().get(req.ID)
	if err != nil {
		return err
	}
	if req.Signal != "" {
		if ss.running() && !ss.proc.signal(req.Signal) {
			return invalid("unknown signal %q", req.Signal)
		}
		return nil
	}
	if ss.running() {
		endGroup(ss.proc.pid, ss.dead)
	}
	ss.table.remove(ss)
	return nil
}

// setExit records the end of the session; it is forgotten SessionLinger
// later if no stream has taken its exit by then.
func (ss *session) setExit(e proto.Exit) {
	ss.mu.Lock()
	ss.exit, ss.ended = &e, time.Now()
	if ss.timer != nil {
		ss.timer.Stop()
	}
	ss.cond.Broadcast()
	ss.mu.Unlock()
	time.AfterFunc(proto.SessionLinger, func() { ss.table.remove(ss) })
}

// running reports whether the process has not been reaped yet (waiting
// for its spawn, which follows the answer to the start).
func (ss *session) running() bool {
	<-ss.spawned
	if ss.proc == nil {
		return false
	}
	select {
	case <-ss.dead:
		return false
	default:
		return true
	}
}

func (ss *session) info() proto.SessionInfo {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return proto.SessionInfo{ID: ss.id, Argv: shortArgv(ss.argv), TTY: ss.tty, Stdin: ss.stdin, Started: ss.started,
		Attached: ss.att != nil, MaxRunAfterDisconnect: ss.maxRun, Exit: ss.exit, OutputBytes: ss.out.total}
}

// shortArgv returns argv cut to about maxInfoArgv bytes: the arguments
// that fit, the one that does not cut short and "...".
func shortArgv(argv []string) []string {
	n := 0
	for i, a := range argv {
		if n+len(a) > maxInfoArgv {
			return append(slices.Clip(argv[:i]), a[:maxInfoArgv-n]+"...")
		}
		n += len(a)
	}
	return argv
}

// write keeps one read of output: the process's copier calls it, and
// waits while an attached stream has not been sent what would be dropped.
func (ss *session) write(t byte, p []byte) error {
	need := len(p) + recOverhead
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for {
		keepFrom := ss.out.end() // nobody attached: anything may go
		if ss.att != nil {
			keepFrom = ss.att.next
		}
		if ss.out.makeRoom(need, keepFrom) {
			break
		}
		ss.cond.Wait()
	}
	ss.out.add(t, bytes.Clone(p))
	ss.cond.Broadcast()
	return nil
}

// attach makes st the session's stream, taking it from the one that had
// it, and stops the max-run timer.
func (ss *session) attach(st sessionStream) *attachment {
	a := &attachment{st: st}
	ss.mu.Lock()
	old := ss.att
	ss.att = a
	a.next = ss.out.first
	ss.gen++
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
	ss.cond.Broadcast()
	ss.mu.Unlock()
	if old != nil {
		old.st.SetReadDeadline(time.Now())
		old.st.SetWriteDeadline(time.Now().Add(takeoverGrace))
	}
	return a
}

// detach lets a go, if it is still attached. A running session with a
// max run after disconnect ends that long after, unless a stream
// attaches first.
func (ss *session) detach(a *attachment) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.att != a {
		return
	}
	ss.att = nil
	ss.gen++
	ss.cond.Broadcast()
	a.st.SetWriteDeadline(time.Now()) // a follower blocked on the host
	if ss.exit != nil || ss.maxRun == nil {
		return // (a session that could not start has its exit, or gets it)
	}
	gen := ss.gen
	ss.timer = time.AfterFunc(*ss.maxRun, func() {
		ss.mu.Lock()
		expired := ss.gen == gen && ss.att == nil && ss.exit == nil
		ss.mu.Unlock()
		if expired && ss.running() {
			ss.proc.hangup()
		}
	})
}

// answer tells the host of the session its stream is attached to; it
// reports false (and detaches) if the stream broke.
func (ss *session) answer(a *attachment) bool {
	if proto.WriteJSON(a.st, proto.TResponse, proto.Response{Sessions: []proto.SessionInfo{ss.info()}}) != nil {
		ss.detach(a)
		return false
	}
	return true
}

// stream serves an answered stream until the session ends (then it is
// forgotten: its exit has been taken), the stream is taken over, or the
// host closes it.
func (ss *session) stream(a *attachment) {
	go func() {
		for {
			t, b, err := proto.ReadFrame(a.st, proto.MaxFrame)
			if err != nil {
				ss.detach(a)
				return
			}
			ss.mu.Lock()
			mine := ss.att == a
			ss.mu.Unlock()
			if mine && ss.running() {
				ss.proc.input(t, b)
			}
		}
	}()
	if ss.follow(a) {
		ss.table.remove(ss)
	}
}

// follow sends a the kept output from its oldest record, then the new
// output as it comes, then the exit (and reports true), until a is no
// longer attached (TEnd: another stream took the session).
func (ss *session) follow(a *attachment) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for {
		for ss.att == a && a.next >= ss.out.end() && ss.exit == nil {
			ss.cond.Wait()
		}
		if ss.att != a {
			ss.mu.Unlock()
			proto.WriteFrame(a.st, proto.TEnd, nil)
			ss.mu.Lock()
			return false
		}
		if a.next < ss.out.first {
			a.next = ss.out.first
		}
		if a.next == ss.out.end() { // and it has ended
			e := *ss.exit
			ss.mu.Unlock()
			err := proto.WriteJSON(a.st, proto.TExit, e)
			if err != nil {
				ss.detach(a)
			}
			ss.mu.Lock()
			return err == nil
		}
		r := ss.out.at(a.next)
		ss.mu.Unlock()
		err := proto.WriteFrame(a.st, r.t, r.p)
		ss.mu.Lock()
		if err != nil {
			ss.mu.Unlock()
			ss.detach(a)
			ss.mu.Lock()
			return false
		}
		if ss.att == a {
			a.next++
			ss.cond.Broadcast()
		}
	}
}

// outbuf keeps the latest output records of a session within a budget:
// the sum of their lengths plus recOverhead each.
type outbuf struct {
	recs  []outRec
	first int64 // sequence number of recs[0]
	size  int   // charged against max
	max   int
	total int64 // bytes ever added
}

type outRec struct {
	t byte // proto.TStdout or proto.TStderr
	p []byte
}

// end is the sequence number the next record will have.
func (b *outbuf) end() int64 { return b.first + int64(len(b.recs)) }

// at returns record seq (first <= seq < end).
func (b *outbuf) at(seq int64) outRec { return b.recs[seq-b.first] }

// makeRoom drops the oldest records, only those before keepFrom, until
// need more fits. It reports whether it does.
func (b *outbuf) makeRoom(need int, keepFrom int64) bool {
	for b.size+need > b.max && len(b.recs) > 0 && b.first < keepFrom {
		b.size -= len(b.recs[0].p) + recOverhead
		b.recs[0] = outRec{}
		b.recs = b.recs[1:]
		b.first++
	}
	return b.size+need <= b.max
}

// add appends a record; makeRoom has made room for it.
func (b *outbuf) add(t byte, p []byte) {
	b.recs = append(b.recs, outRec{t, p})
	b.size += len(p) + recOverhead
	b.total += int64(len(p))
}
