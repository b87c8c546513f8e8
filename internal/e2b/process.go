package e2b

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/e2b/envd/process"
	"github.com/wisp-sh/wisp/internal/e2b/envd/process/processconnect"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// slowSubscriber is how long a process's output waits for one stream
// that does not take it before that stream is dropped: output is not
// buffered without bound, and one stalled client does not stall the
// others for ever.
const slowSubscriber = 30 * time.Second

// proc is a process started through envd: an exec session of the guest
// agent (which outlives the stream: a paused sandbox's processes sleep and
// wake with it), and the streams (Start's, Connect's) its events go to.
type proc struct {
	pid    uint32
	tag    string
	cfg    *process.ProcessConfig
	pty    bool
	id     string    // the guest's session
	exitAt time.Time // when the guest reported the exit (for the log)

	// The attached session stream, nil while detached (the sandbox was
	// paused): an input, a resize or a Connect attaches again. release
	// lets go of the sprite the attached stream holds awake.
	wmu     sync.Mutex
	sess    *agent.Session
	release func()
	// detaching: the stream is being let go of on purpose (a pause);
	// the pump then leaves the process in the table.
	detaching bool

	mu    sync.Mutex
	subs  map[*sub]bool
	ended bool
}

// sub is one stream of a process's events, ending with the end event.
// gone is closed when the stream is unsubscribed: by its handler, by the
// pump dropping a stream too slow, or at the end of the process.
type sub struct {
	ch   chan *process.ProcessEvent
	gone chan struct{}
}

func (p *proc) subscribe() (*sub, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return nil, false
	}
	s := &sub{ch: make(chan *process.ProcessEvent, 16), gone: make(chan struct{})}
	p.subs[s] = true
	return s, true
}

func (p *proc) unsubscribe(s *sub) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.subs[s] {
		delete(p.subs, s)
		close(s.gone) // ch is the pump's to close: it may be sending
	}
}

// deliver gives ev to every stream, waiting for each up to slowSubscriber.
func (p *proc) deliver(ev *process.ProcessEvent) {
	p.mu.Lock()
	subs := slices.Collect(maps.Keys(p.subs))
	p.mu.Unlock()
	for _, s := range subs {
		t := time.NewTimer(slowSubscriber)
		select {
		case s.ch <- ev:
		case <-s.gone:
		case <-t.C:
			p.unsubscribe(s)
		}
		t.Stop()
	}
}

// errDetached is an input to a process whose sandbox was paused and whose
// stream could not be attached again.
var errDetached = errors.New("the process is not attached")

// with runs fn on the attached session, attaching it again first when the
// sandbox was paused since (attach).
func (p *proc) with(ctx context.Context, attach func(ctx context.Context, p *proc) error, fn func(*agent.Session) error) error {
	p.wmu.Lock()
	if p.sess == nil {
		p.wmu.Unlock()
		if err := attach(ctx, p); err != nil {
			return err
		}
		p.wmu.Lock()
	}
	defer p.wmu.Unlock()
	if p.sess == nil {
		return errDetached
	}
	return fn(p.sess)
}

// detach lets go of the process's stream on purpose (its sandbox is
// being paused): the process goes on in the guest, and stays in the table.
func (p *proc) detach() {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.sess != nil {
		p.detaching = true
		p.sess.Close()
	}
}

// abandon lets go of the process's stream for good (its sandbox is
// killed, or the daemon stops); the pump then ends its streams.
func (p *proc) abandon() {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.sess != nil {
		p.sess.Close()
	}
}

// pump reads the session and fans its events out until the process ends,
// then removes it from the table; or until the stream is detached on
// purpose, leaving the process for a later attach.
func (p *proc) pump(l *live, sess *agent.Session, release func()) {
	end := &process.ProcessEvent_EndEvent{ExitCode: -1, Status: "lost"}
	for {
		t, b, exit, err := sess.Next()
		if err != nil {
			p.wmu.Lock()
			detached := p.detaching && p.sess == sess
			if detached {
				p.sess, p.detaching = nil, false
			}
			p.wmu.Unlock()
			if detached {
				release()
				return
			}
			msg := "the connection to the process was lost: " + err.Error()
			end.Error = &msg
			break
		}
		var ev *process.ProcessEvent
		switch t {
		case proto.TStdout:
			d := &process.ProcessEvent_DataEvent{Output: &process.ProcessEvent_DataEvent_Stdout{Stdout: b}}
			if p.pty {
				d.Output = &process.ProcessEvent_DataEvent_Pty{Pty: b}
			}
			ev = &process.ProcessEvent{Event: &process.ProcessEvent_Data{Data: d}}
		case proto.TStderr:
			d := &process.ProcessEvent_DataEvent{Output: &process.ProcessEvent_DataEvent_Stderr{Stderr: b}}
			ev = &process.ProcessEvent{Event: &process.ProcessEvent_Data{Data: d}}
		case proto.TExit:
			p.exitAt = time.Now()
			end = endEvent(exit)
		}
		if ev == nil {
			break
		}
		p.deliver(ev)
	}
	sess.Close()
	l.mu.Lock()
	if l.procs[p.pid] == p {
		delete(l.procs, p.pid)
	}
	l.mu.Unlock()
	p.deliver(&process.ProcessEvent{Event: &process.ProcessEvent_End{End: end}})
	p.mu.Lock()
	p.ended = true
	for s := range p.subs {
		delete(p.subs, s)
		close(s.gone)
	}
	p.mu.Unlock()
	release()
}

// endEvent is envd's end of a process: exit status N, or signal: killed
// with exit code -1, as Go's os/exec reports them.
func endEvent(e proto.Exit) *process.ProcessEvent_EndEvent {
	if e.Signal != "" {
		status := "signal: " + signalText(e.Signal)
		return &process.ProcessEvent_EndEvent{ExitCode: -1, Exited: false, Status: status, Error: &status}
	}
	end := &process.ProcessEvent_EndEvent{ExitCode: int32(e.Code), Exited: true, Status: "exit status " + strconv.Itoa(e.Code)}
	if e.Error != "" {
		end.Error = &e.Error
	} else if e.Code != 0 {
		end.Error = &end.Status
	}
	return end
}

func signalText(name string) string {
	switch name {
	case "KILL":
		return "killed"
	case "TERM":
		return "terminated"
	case "INT":
		return "interrupt"
	case "HUP":
		return "hangup"
	}
	return name
}

// processService is envd's process.Process.
type processService struct{ h *Handler }

var _ processconnect.ProcessHandler = (*processService)(nil)

func (s *processService) find(ctx context.Context, sel *process.ProcessSelector) (*proc, error) {
	l := s.h.liveOf(reqOf(ctx).sb.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch v := sel.GetSelector().(type) {
	case *process.ProcessSelector_Pid:
		if p, ok := l.procs[v.Pid]; ok {
			return p, nil
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found", v.Pid))
	case *process.ProcessSelector_Tag:
		for _, p := range l.procs {
			if p.tag == v.Tag {
				return p, nil
			}
		}
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with tag %q not found", v.Tag))
	}
	return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("a process selector (pid or tag) is required"))
}

func (s *processService) List(ctx context.Context, _ *connect.Request[process.ListRequest]) (*connect.Response[process.ListResponse], error) {
	l := s.h.liveOf(reqOf(ctx).sb.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	out := &process.ListResponse{}
	for _, pid := range slices.Sorted(maps.Keys(l.procs)) {
		p := l.procs[pid]
		info := &process.ProcessInfo{Config: p.cfg, Pid: pid}
		if p.tag != "" {
			info.Tag = &p.tag
		}
		out.Processes = append(out.Processes, info)
	}
	return connect.NewResponse(out), nil
}

// rpcErr turns an error into a Connect error of its kind.
func rpcErr(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeInternal
	switch httpStatus(err) {
	case 404:
		code = connect.CodeNotFound
	case 400:
		code = connect.CodeInvalidArgument
	case 409:
		code = connect.CodeAlreadyExists
	case 403:
		code = connect.CodePermissionDenied
	case 503, 502:
		code = connect.CodeUnavailable
	case 507:
		code = connect.CodeResourceExhausted
	}
	return connect.NewError(code, err)
}

func (s *processService) Start(ctx context.Context, req *connect.Request[process.StartRequest], stream *connect.ServerStream[process.StartResponse]) error {
	h := s.h
	rq := reqOf(ctx)
	cfg := req.Msg.GetProcess()
	t0 := time.Now()
	if cfg == nil || cfg.GetCmd() == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is required"))
	}
	l := h.liveOf(rq.sb.ID)
	l.mu.Lock()
	n := len(l.procs)
	l.mu.Unlock()
	if n >= h.opt.MaxProcs {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d processes run in this sandbox, the most wisp allows at once", n))
	}
	ag, release, err := h.agentOf(ctx)
	if err != nil {
		return rpcErr(err)
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	env, err := h.opt.Sprites.ExecEnv(rq.sb.ID)
	if err != nil {
		return rpcErr(err)
	}
	tEnv := time.Now()
	extra := make([]string, 0, len(cfg.GetEnvs()))
	for _, k := range slices.Sorted(maps.Keys(cfg.GetEnvs())) {
		extra = append(extra, k+"="+cfg.GetEnvs()[k])
	}
	ex := proto.ExecRequest{
		Argv: append([]string{cfg.GetCmd()}, cfg.GetArgs()...),
		Env:  sprite.MergeEnv(env, extra),
		User: rq.user,
	}
	if cfg.Cwd != nil && *cfg.Cwd != "" {
		dir, err := h.resolve(ctx, ag, *cfg.Cwd)
		if err != nil {
			return rpcErr(err)
		}
		fi, err := ag.Stat(ctx, dir)
		if err != nil || !fi.IsDir {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd '%s' does not exist or is not a directory", dir))
		}
		ex.Dir = dir
	}
	opt := proto.SessionRequest{Stdin: req.Msg.Pty != nil || req.Msg.GetStdin()}
	cmd, login := loginCommand(cfg)
	login = login && req.Msg.Pty == nil && !h.opt.RealLogin
	asLogin := func(ex proto.ExecRequest) proto.ExecRequest {
		if env, ok := h.loginEnv(ctx, ag, rq.user, ex.Env); ok {
			ex.Argv, ex.Env = []string{"/bin/bash", "-c", cmd}, env
		}
		return ex
	}
	start := ex
	if pty := req.Msg.Pty; pty != nil {
		start.TTY = true
		start.Rows, start.Cols = uint16(pty.GetSize().GetRows()), uint16(pty.GetSize().GetCols())
	} else if login {
		if env, expect, ok := h.cachedLogin(ctx, ag, rq.user, ex.Env); ok {
			start.Argv, start.Env, opt.Expect = []string{"/bin/bash", "-c", cmd}, env, expect
		} else {
			start = asLogin(ex)
		}
	}
	tPrep := time.Now()
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	// The process runs until it ends, attached or not (as envd's do);
	// killing the sandbox ends it.
	sess, err := ag.StartSession(octx, start, opt)
	var ge *agent.GuestError
	if opt.Expect != nil && errors.As(err, &ge) && ge.Kind == proto.KindStale {
		// A login file changed since its environment was made: make it
		// again.
		opt.Expect = nil
		sess, err = ag.StartSession(octx, asLogin(ex), opt)
	}
	cancel()
	if err != nil {
		return rpcErr(err)
	}
	p := &proc{cfg: cfg, pty: start.TTY, id: sess.Info.ID, sess: sess, release: release, subs: map[*sub]bool{}}
	if req.Msg.Tag != nil {
		p.tag = *req.Msg.Tag
	}
	sb, _ := p.subscribe()
	l.mu.Lock()
	l.nextPid++
	p.pid = l.nextPid
	l.procs[p.pid] = p
	l.mu.Unlock()
	ok = true
	tOpen := time.Now()
	go p.pump(l, sess, release)
	err = follow(ctx, req.Header(), p, sb, func(ev *process.ProcessEvent) error {
		return stream.Send(&process.StartResponse{Event: ev})
	})
	h.log.Debug("e2b process", "sandbox", rq.sb.ID, "pid", p.pid, "prepare", tPrep.Sub(t0), "login", tPrep.Sub(tEnv), "open", tOpen.Sub(tPrep), "exit", p.exitAt.Sub(tOpen), "sent", time.Since(p.exitAt))
	return err
}

// follow sends the start event and then p's events from sb until the
// end, with keepalives, until the client goes away.
func follow(ctx context.Context, hdr interface{ Get(string) string }, p *proc, sb *sub, send func(*process.ProcessEvent) error) error {
	defer p.unsubscribe(sb)
	if err := send(&process.ProcessEvent{Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: p.pid}}}); err != nil {
		return err
	}
	keep := time.NewTicker(keepalive(hdr))
	defer keep.Stop()
	for {
		select {
		case ev := <-sb.ch:
			if err := send(ev); err != nil {
				return err
			}
			if ev.GetEnd() != nil {
				return nil
			}
		case <-sb.gone:
			// Ended (or dropped): what is queued, the end among it, goes.
			for {
				select {
				case ev := <-sb.ch:
					if err := send(ev); err != nil || ev.GetEnd() != nil {
						return err
					}
				default:
					return nil
				}
			}
		case <-keep.C:
			if err := send(&process.ProcessEvent{Event: &process.ProcessEvent_Keepalive{Keepalive: &process.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// keepalive is the interval the client asks for in Keepalive-Ping-Interval
// (seconds), 1 to 60, 50 when it does not say.
func keepalive(hdr interface{ Get(string) string }) time.Duration {
	n, err := strconv.Atoi(hdr.Get("Keepalive-Ping-Interval"))
	if err != nil || n < 1 {
		n = 50
	}
	return time.Duration(min(n, 60)) * time.Second
}

func (s *processService) Connect(ctx context.Context, req *connect.Request[process.ConnectRequest], stream *connect.ServerStream[process.ConnectResponse]) error {
	p, err := s.find(ctx, req.Msg.GetProcess())
	if err != nil {
		return err
	}
	sb, ok := p.subscribe()
	if ok {
		p.wmu.Lock()
		detached := p.sess == nil
		p.wmu.Unlock()
		if detached {
			if err := s.attach(ctx, p); err != nil {
				p.unsubscribe(sb)
				return err
			}
		}
	}
	if !ok {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d has ended", p.pid))
	}
	return follow(ctx, req.Header(), p, sb, func(ev *process.ProcessEvent) error {
		return stream.Send(&process.ConnectResponse{Event: ev})
	})
}

func (s *processService) Update(ctx context.Context, req *connect.Request[process.UpdateRequest]) (*connect.Response[process.UpdateResponse], error) {
	p, err := s.find(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if size := req.Msg.GetPty().GetSize(); size != nil {
		if !p.pty {
			return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("the process has no pty"))
		}
		if err := p.with(ctx, s.attach, func(ss *agent.Session) error { return ss.Resize(uint16(size.GetRows()), uint16(size.GetCols())) }); err != nil {
			return nil, rpcErr(err)
		}
	}
	return connect.NewResponse(&process.UpdateResponse{}), nil
}

// input sends one input to p's stdin (or its pty, which is the same
// stream in the guest).
func (s *processService) input(ctx context.Context, p *proc, in *process.ProcessInput) error {
	var b []byte
	switch v := in.GetInput().(type) {
	case *process.ProcessInput_Stdin:
		b = v.Stdin
	case *process.ProcessInput_Pty:
		b = v.Pty
	default:
		return nil
	}
	return rpcErr(p.with(ctx, s.attach, func(ss *agent.Session) error {
		_, err := ss.Write(b)
		return err
	}))
}

// attach attaches p's session again after a pause: the guest replays the
// output it kept (up to 1 MiB) to the process's streams, then follows.
func (s *processService) attach(ctx context.Context, p *proc) error {
	ag, release, err := s.h.agentOf(ctx)
	if err != nil {
		return rpcErr(err)
	}
	sess, err := ag.AttachSession(ctx, p.id)
	if err != nil {
		release()
		if isNotFound(err) {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d has ended", p.pid))
		}
		return rpcErr(err)
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.sess != nil { // attached meanwhile
		sess.Close()
		release()
		return nil
	}
	p.sess, p.release = sess, release
	go p.pump(s.h.liveOf(reqOf(ctx).sb.ID), sess, release)
	return nil
}

func (s *processService) SendInput(ctx context.Context, req *connect.Request[process.SendInputRequest]) (*connect.Response[process.SendInputResponse], error) {
	p, err := s.find(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := s.input(ctx, p, req.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&process.SendInputResponse{}), nil
}

func (s *processService) StreamInput(ctx context.Context, stream *connect.ClientStream[process.StreamInputRequest]) (*connect.Response[process.StreamInputResponse], error) {
	var p *proc
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *process.StreamInputRequest_Start:
			var err error
			if p, err = s.find(ctx, ev.Start.GetProcess()); err != nil {
				return nil, err
			}
		case *process.StreamInputRequest_Data:
			if p == nil {
				return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("input before the start event"))
			}
			if err := s.input(ctx, p, ev.Data.GetInput()); err != nil {
				return nil, err
			}
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&process.StreamInputResponse{}), nil
}

func (s *processService) SendSignal(ctx context.Context, req *connect.Request[process.SendSignalRequest]) (*connect.Response[process.SendSignalResponse], error) {
	p, err := s.find(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	name := ""
	switch req.Msg.GetSignal() {
	case process.Signal_SIGNAL_SIGKILL:
		name = "KILL"
	case process.Signal_SIGNAL_SIGTERM:
		name = "TERM"
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal %v is not supported", req.Msg.GetSignal()))
	}
	p.wmu.Lock()
	ss := p.sess
	if ss != nil {
		err = ss.Signal(name)
	}
	p.wmu.Unlock()
	if ss == nil {
		// Detached (paused since): no need to attach to signal it.
		ag, release, aerr := s.h.agentOf(ctx)
		if aerr != nil {
			return nil, rpcErr(aerr)
		}
		err = ag.KillSession(ctx, p.id, name)
		release()
	}
	if err != nil {
		return nil, rpcErr(err)
	}
	return connect.NewResponse(&process.SendSignalResponse{}), nil
}

func (s *processService) CloseStdin(ctx context.Context, req *connect.Request[process.CloseStdinRequest]) (*connect.Response[process.CloseStdinResponse], error) {
	p, err := s.find(ctx, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := p.with(ctx, s.attach, func(ss *agent.Session) error { return ss.CloseStdin() }); err != nil {
		return nil, rpcErr(err)
	}
	return connect.NewResponse(&process.CloseStdinResponse{}), nil
}
