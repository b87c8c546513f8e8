package guest

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// Services are long-running processes the agent supervises for the host
// (OpServices sets the whole list): each runs as /bin/sh -c CMD in a
// process group of its own, is started again when it ends (after a pause
// that doubles from backoffMin to backoffMax, and starts over once a
// process has run resetAfter), and its output (stdout and stderr, merged)
// is kept in a ring of proto.ServiceLogKeep bytes.
const (
	backoffMin = time.Second
	backoffMax = 30 * time.Second
	resetAfter = time.Minute
	// stopGrace is how long a stopped service's group has between TERM
	// and KILL.
	stopGrace = 3 * time.Second
)

// supervisor holds the services.
type supervisor struct {
	syncMu sync.Mutex // one OpServices at a time
	mu     sync.Mutex
	svcs   map[string]*service
}

type service struct {
	def  proto.Service
	logs ring
	stop chan struct{} // closed to stop it
	done chan struct{} // closed when its loop has ended

	mu sync.Mutex
	st proto.ServiceState
}

func (sv *service) set(fn func(st *proto.ServiceState)) {
	sv.mu.Lock()
	fn(&sv.st)
	sv.mu.Unlock()
}

func (sv *service) state() proto.ServiceState {
	sv.mu.Lock()
	st := sv.st
	sv.mu.Unlock()
	st.LogBytes = sv.logs.written()
	return st
}

// supervisor returns the server's, made on first use.
func (s *Server) supervisor() *supervisor {
	s.svcOnce.Do(func() { s.svcs = &supervisor{svcs: map[string]*service{}} })
	return s.svcs
}

// setServices makes defs the running services and returns their states,
// in the order of defs.
func (s *Server) setServices(defs []proto.Service) ([]proto.ServiceState, error) {
	seen := map[string]bool{}
	for _, d := range defs {
		if d.Name == "" || d.Cmd == "" || seen[d.Name] {
			return nil, invalid("service %q: a service needs a name of its own and a command", d.Name)
		}
		seen[d.Name] = true
	}
	sup := s.supervisor()
	sup.syncMu.Lock()
	defer sup.syncMu.Unlock()

	// Stop the services that are gone or changed, all at once.
	sup.mu.Lock()
	var ending []*service
	for name, sv := range sup.svcs {
		i := slices.IndexFunc(defs, func(d proto.Service) bool { return d.Name == name })
		if i < 0 || !sameService(defs[i], sv.def) {
			close(sv.stop)
			ending = append(ending, sv)
			delete(sup.svcs, name)
		}
	}
	sup.mu.Unlock()
	for _, sv := range ending {
		<-sv.done
		s.Log.Info("service stopped", "service", sv.def.Name)
	}

	out := make([]proto.ServiceState, 0, len(defs))
	sup.mu.Lock()
	defer sup.mu.Unlock()
	for _, d := range defs {
		sv, ok := sup.svcs[d.Name]
		if !ok {
			sv = &service{def: d, stop: make(chan struct{}), done: make(chan struct{}), logs: ring{buf: make([]byte, proto.ServiceLogKeep)}}
			sv.st = proto.ServiceState{Name: d.Name, State: proto.ServiceBackoff}
			sup.svcs[d.Name] = sv
			started := make(chan struct{})
			go s.runService(sv, started)
			<-started // the first start has been tried: its state is known
		}
		out = append(out, sv.state())
	}
	return out, nil
}

func sameService(a, b proto.Service) bool {
	return a.Name == b.Name && a.Cmd == b.Cmd && a.Dir == b.Dir && a.User == b.User && a.Port == b.Port && slices.Equal(a.Env, b.Env)
}

// stopServices stops every service (before the sprite shuts down).
func (s *Server) stopServices() {
	if _, err := s.setServices(nil); err != nil {
		s.Log.Warn("stop services", "err", err)
	}
}

// serviceLogs sends the kept output of the named service.
func (s *Server) serviceLogs(st io.Writer, name string) {
	sup := s.supervisor()
	sup.mu.Lock()
	sv := sup.svcs[name]
	sup.mu.Unlock()
	if sv == nil {
		proto.WriteJSON(st, proto.TResponse, errResponse(&kindError{proto.KindNotFound, fmt.Errorf("no service %q runs in the sprite", name)}))
		return
	}
	if proto.WriteJSON(st, proto.TResponse, proto.Response{}) != nil {
		return
	}
	b := sv.logs.snapshot()
	for len(b) > 0 {
		n := min(len(b), proto.ChunkSize)
		if proto.WriteFrame(st, proto.TData, b[:n]) != nil {
			return
		}
		b = b[n:]
	}
	proto.WriteFrame(st, proto.TEnd, nil)
}

// runService starts sv's process again and again until sv.stop closes.
// started is closed once the first start has been tried.
func (s *Server) runService(sv *service, started chan struct{}) {
	defer close(sv.done)
	log := s.Log.With("service", sv.def.Name)
	delay := backoffMin
	for n := 0; ; n++ {
		t0 := time.Now()
		pid, waitc, err := s.startService(sv)
		sv.set(func(st *proto.ServiceState) {
			st.Restarts = n
			if err != nil {
				st.State, st.Pid, st.LastExit = proto.ServiceBackoff, 0, "could not start: "+err.Error()
				return
			}
			st.State, st.Pid, st.StartedAt = proto.ServiceRunning, pid, t0.UTC()
		})
		if n == 0 {
			close(started)
		}
		if err != nil {
			log.Warn("service did not start", "err", err)
		} else {
			var ws syscall.WaitStatus
			select {
			case ws = <-waitc:
			case <-sv.stop:
				endGroup(pid, waitc)
				sv.set(func(st *proto.ServiceState) { st.State, st.Pid, st.LastExit = proto.ServiceExited, 0, "stopped" })
				return
			}
			// What it left behind in its group goes with it.
			syscall.Kill(-pid, syscall.SIGKILL)
			why := exitText(ws)
			log.Info("service ended", "pid", pid, "exit", why)
			sv.set(func(st *proto.ServiceState) { st.State, st.Pid, st.LastExit = proto.ServiceBackoff, 0, why })
			if time.Since(t0) >= resetAfter {
				delay = backoffMin
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-sv.stop:
			t.Stop()
			sv.set(func(st *proto.ServiceState) { st.State = proto.ServiceExited })
			return
		}
		delay = min(2*delay, backoffMax)
	}
}

// startService starts one process of sv, its output going to sv.logs.
func (s *Server) startService(sv *service) (int, <-chan syscall.WaitStatus, error) {
	d := sv.def
	u, err := lookupUser(d.User)
	if err != nil {
		return 0, nil, err
	}
	env := mergeEnv(u.env(), d.Env)
	dir := d.Dir
	if dir == "" {
		dir = u.home
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			dir = "/"
		}
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return 0, nil, invalid("working directory %s does not exist", dir)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, err
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	cred := &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: u.groups}
	if os.Getuid() != 0 {
		cred = nil // tests run unprivileged
	}
	attr := &syscall.ProcAttr{Dir: dir, Env: env, Files: []uintptr{null.Fd(), w.Fd(), w.Fd()},
		Sys: &syscall.SysProcAttr{Credential: cred, Setpgid: true}}
	pid, waitc, err := s.Reaper.Start("/bin/sh", []string{"/bin/sh", "-c", d.Cmd}, attr)
	w.Close()
	if err != nil {
		r.Close()
		return 0, nil, err
	}
	go func() {
		// Until every process holding the pipe has ended (its group is
		// killed when the service ends or stops).
		io.Copy(&sv.logs, r)
		r.Close()
	}()
	return pid, waitc, nil
}

// endGroup ends the process group of pid: TERM, and KILL after stopGrace
// (or at once when the leader is gone: what is left of its group goes).
// gone yields (or closes) when the leader has been reaped.
func endGroup[T any](pid int, gone <-chan T) {
	waitc := gone
	syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-waitc:
		syscall.Kill(-pid, syscall.SIGKILL)
		return
	case <-t.C:
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-waitc:
	case <-time.After(stopGrace):
		// Not reaped yet (stuck in the kernel): the reaper takes it later.
	}
}

func exitText(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + unix.SignalName(ws.Signal())
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

// ring keeps the last len(buf) bytes written to it.
type ring struct {
	mu    sync.Mutex
	buf   []byte
	total int64
}

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(p)
	if len(p) > len(r.buf) {
		r.total += int64(len(p) - len(r.buf))
		p = p[len(p)-len(r.buf):]
	}
	for len(p) > 0 {
		at := int(r.total % int64(len(r.buf)))
		k := copy(r.buf[at:], p)
		p = p[k:]
		r.total += int64(k)
	}
	return n, nil
}

func (r *ring) written() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// snapshot returns the kept bytes, oldest first.
func (r *ring) snapshot() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total <= int64(len(r.buf)) {
		return slices.Clone(r.buf[:r.total])
	}
	at := int(r.total % int64(len(r.buf)))
	return append(slices.Clone(r.buf[at:]), r.buf[:at]...)
}
