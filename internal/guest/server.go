// Package guest is the code that runs only inside a sprite: the init steps
// that bring the root filesystem up, and the agent server that answers the
// host over one byte stream.
package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
)

// Server answers the host's requests.
type Server struct {
	Log      *slog.Logger
	Reaper   *Reaper
	Shutdown func() error // called for OpShutdown after sync; may be nil

	freezeMu sync.Mutex
	frozen   *time.Timer // set while the root is frozen; fires the automatic thaw

	svcOnce sync.Once
	svcs    *supervisor // the services (services_linux.go)

	sessOnce sync.Once
	sess     *sessionTable // the exec sessions (sessions_linux.go)
}

func (s *Server) freeze() error {
	s.freezeMu.Lock()
	defer s.freezeMu.Unlock()
	if s.frozen != nil {
		return invalid("already frozen")
	}
	if err := freezeRoot(); err != nil {
		return err
	}
	s.frozen = time.AfterFunc(proto.FreezeLimit, func() {
		s.Log.Warn("no thaw within the limit; thawing")
		s.thaw()
	})
	return nil
}

func (s *Server) thaw() error {
	s.freezeMu.Lock()
	defer s.freezeMu.Unlock()
	if s.frozen == nil {
		return nil
	}
	s.frozen.Stop()
	s.frozen = nil
	return thawRoot()
}

// Serve runs sessions forever: open the channel, wait for the host's Hello,
// answer Ready, serve yamux streams until the session breaks, then start over.
// A host that goes away (daemon restart) is thus replaced by the next one.
func (s *Server) Serve(ctx context.Context, open func() (io.ReadWriteCloser, error)) error {
	failures := 0
	for ctx.Err() == nil {
		ch, err := open()
		if err != nil {
			// No host (daemon down): log the first failure and then once a
			// minute, so the console log does not fill up.
			if failures++; failures == 1 || failures%300 == 0 {
				s.Log.Warn("open agent channel", "err", err, "failures", failures)
			}
			time.Sleep(retryDelay(failures))
			continue
		}
		failures = 0
		if err := s.session(ctx, ch); err != nil && !errors.Is(err, io.EOF) {
			s.Log.Info("session ended", "err", err)
		}
		ch.Close()
	}
	return ctx.Err()
}

func (s *Server) session(ctx context.Context, ch io.ReadWriteCloser) error {
	// virtio-serial reads EOF while no host is connected: wait a little,
	// and after a while give up so the caller reopens the port.
	eofs := 0
	onEOF := func() error {
		if eofs++; eofs > 50 {
			return io.EOF
		}
		time.Sleep(20 * time.Millisecond)
		return nil
	}
	answered := ""
	for {
		kind, nonce, err := proto.ScanLine(ch, 1<<30, onEOF, proto.Hello, proto.Go)
		if err != nil {
			return err
		}
		eofs = 0
		switch {
		case kind == proto.Hello && nonce != answered:
			if _, err := ch.Write([]byte(proto.Ready + nonce + "\n")); err != nil {
				return err
			}
			answered = nonce
		case kind == proto.Go && nonce == answered:
			return s.serveYamux(ctx, ch)
		}
	}
}

func (s *Server) serveYamux(ctx context.Context, ch io.ReadWriteCloser) error {
	sess, err := yamux.Server(agent.FrameWriter(ch), agent.Config())
	if err != nil {
		return err
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		go s.handle(ctx, st)
	}
}

// handle serves one stream.
func (s *Server) handle(ctx context.Context, st *yamux.Stream) {
	defer st.Close()
	var req proto.Request
	if err := proto.ReadJSON(st, proto.TRequest, proto.MaxFrame, &req); err != nil {
		s.Log.Warn("bad request", "err", err)
		return
	}
	var resp proto.Response
	var err error
	switch req.Op {
	case proto.OpExec:
		s.exec(ctx, st, req.Exec)
		return
	case proto.OpRead:
		s.readFile(st, req)
		return
	case proto.OpWrite:
		err = writeFile(st, req)
	case proto.OpTarOut:
		tarOut(st, req)
		return
	case proto.OpTarIn:
		err = tarIn(st, req)
	case proto.OpServices:
		resp.Services, err = s.setServices(req.Services)
	case proto.OpSessionStart:
		s.startSession(st, req)
		return
	case proto.OpSessionAttach:
		s.attachSession(st, req)
		return
	case proto.OpSessionList:
		resp.Sessions = s.sessions().list()
	case proto.OpSessionKill:
		err = s.killSession(req.Session)
	case proto.OpServiceLogs:
		s.serviceLogs(st, req.Path)
		return
	case proto.OpInfo:
		var info proto.Info
		info, err = guestInfo()
		resp.Info = &info
	case proto.OpStat:
		var fi proto.FileInfo
		fi, err = stat(req.Path)
		resp.File = &fi
	case proto.OpStats:
		resp.Files, resp.Truncated, err = stats(req.Paths)
	case proto.OpList:
		resp.Files, resp.Truncated, err = list(req.Path)
	case proto.OpMkdir:
		err = mkdir(req)
	case proto.OpRemove:
		err = remove(req)
	case proto.OpSync:
		syncFS()
	case proto.OpShutdown:
		s.stopServices()
		syncFS()
		if s.Shutdown != nil {
			err = s.Shutdown()
		}
	case proto.OpSetTime:
		err = setTime(req.Time, req.Seed)
	case proto.OpFreeze:
		err = s.freeze()
	case proto.OpThaw:
		err = s.thaw()
	case proto.OpIdentity:
		err = setIdentity(req)
		if req.Pids > 0 && s.Reaper.Limit != nil {
			err = errors.Join(err, s.Reaper.Limit.Set(req.Pids))
		}
	default:
		err = invalid("unknown op %q", req.Op)
	}
	if err != nil {
		resp = errResponse(err)
	}
	proto.WriteJSON(st, proto.TResponse, resp)
}

// kindError carries a proto.Kind* for the host.
type kindError struct {
	kind string
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

func invalid(format string, args ...any) error {
	return &kindError{proto.KindInvalid, fmt.Errorf(format, args...)}
}

func errResponse(err error) proto.Response {
	r := proto.Response{Error: err.Error(), Kind: proto.KindInternal}
	var ke *kindError
	switch {
	case errors.As(err, &ke):
		r.Kind = ke.kind
	case errors.Is(err, fsErrNotExist):
		r.Kind = proto.KindNotFound
	case errors.Is(err, fsErrExist):
		r.Kind = proto.KindExists
	case errors.Is(err, fsErrPermission):
		r.Kind = proto.KindPerm
	}
	return r
}

// retryDelay backs off from 10 ms to 200 ms between dials: a host that
// closed the channel on purpose (around a gVisor checkpoint) listens again
// within milliseconds.
func retryDelay(failures int) time.Duration {
	return min(10*time.Millisecond<<min(failures-1, 5), 200*time.Millisecond)
}
