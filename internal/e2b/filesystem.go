package e2b

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/e2b/envd/filesystem"
	"github.com/wisp-sh/wisp/internal/e2b/envd/filesystem/filesystemconnect"
)

// Watches are polled: the guest agent has no inotify. Every pollEvery the
// watched tree is listed again (at most maxWatchEntries entries) and the
// difference becomes events.
const (
	pollEvery       = 200 * time.Millisecond
	maxWatchEntries = 10000
	maxWatchers     = 16               // polled watchers (CreateWatcher) per sandbox
	watcherIdle     = 10 * time.Minute // a polled watcher nobody asks for ends
	maxQueued       = 10000            // events a polled watcher keeps
)

type filesystemService struct{ h *Handler }

var _ filesystemconnect.FilesystemHandler = (*filesystemService)(nil)

// entry is envd's EntryInfo of a guest file at p.
func entry(p string, fi proto.FileInfo) *filesystem.EntryInfo {
	mode := fs.FileMode(fi.Mode)
	e := &filesystem.EntryInfo{
		Name: path.Base(p), Path: p, Size: fi.Size,
		Mode: uint32(mode.Perm()), Permissions: mode.String(),
		ModifiedTime: timestamppb.New(fi.ModTime),
		Type:         filesystem.FileType_FILE_TYPE_FILE,
	}
	switch {
	case fi.IsDir:
		e.Type = filesystem.FileType_FILE_TYPE_DIRECTORY
	case mode&fs.ModeSymlink != 0:
		e.Type = filesystem.FileType_FILE_TYPE_SYMLINK
		link := fi.Link
		e.SymlinkTarget = &link
	}
	return e
}

// open returns the agent and the resolved path of a request.
func (s *filesystemService) open(ctx context.Context, p string) (*agent.Client, func(), string, error) {
	ag, release, err := s.h.agentOf(ctx)
	if err != nil {
		return nil, nil, "", rpcErr(err)
	}
	abs, err := s.h.resolve(ctx, ag, p)
	if err != nil {
		release()
		return nil, nil, "", rpcErr(err)
	}
	return ag, release, abs, nil
}

func notFound(p string, err error) error {
	if isNotFound(err) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("path '%s' does not exist", p))
	}
	return rpcErr(err)
}

func (s *filesystemService) Stat(ctx context.Context, req *connect.Request[filesystem.StatRequest]) (*connect.Response[filesystem.StatResponse], error) {
	ag, release, p, err := s.open(ctx, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	defer release()
	fi, err := ag.Stat(ctx, p)
	if err != nil {
		return nil, notFound(p, err)
	}
	return connect.NewResponse(&filesystem.StatResponse{Entry: entry(p, fi)}), nil
}

func (s *filesystemService) MakeDir(ctx context.Context, req *connect.Request[filesystem.MakeDirRequest]) (*connect.Response[filesystem.MakeDirResponse], error) {
	ag, release, p, err := s.open(ctx, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	defer release()
	made, err := mkdirs(ctx, ag, p, reqOf(ctx).user)
	if err != nil {
		return nil, rpcErr(err)
	}
	if !made {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory '%s' already exists", p))
	}
	fi, err := ag.Stat(ctx, p)
	if err != nil {
		return nil, rpcErr(err)
	}
	return connect.NewResponse(&filesystem.MakeDirResponse{Entry: entry(p, fi)}), nil
}

func (s *filesystemService) Move(ctx context.Context, req *connect.Request[filesystem.MoveRequest]) (*connect.Response[filesystem.MoveResponse], error) {
	ag, release, src, err := s.open(ctx, req.Msg.GetSource())
	if err != nil {
		return nil, err
	}
	defer release()
	dst, err := s.h.resolve(ctx, ag, req.Msg.GetDestination())
	if err != nil {
		return nil, rpcErr(err)
	}
	if _, err := ag.Stat(ctx, src); err != nil {
		return nil, notFound(src, err)
	}
	user := reqOf(ctx).user
	if _, err := mkdirs(ctx, ag, path.Dir(dst), user); err != nil {
		return nil, rpcErr(err)
	}
	// The agent has no rename: mv, as the user, renames (and moves
	// across filesystems).
	var out strings.Builder
	exit, err := ag.Exec(ctx, proto.ExecRequest{Argv: []string{"mv", "-T", "--", src, dst}, User: user}, execIO(&limitedWriter{w: &out, n: 4096}))
	if err != nil {
		return nil, rpcErr(err)
	}
	if exit.Code != 0 {
		msg := strings.TrimSpace(out.String() + " " + exit.Error)
		code := connect.CodeInternal
		if strings.Contains(msg, "Permission denied") {
			code = connect.CodePermissionDenied
		}
		return nil, connect.NewError(code, fmt.Errorf("move %s to %s: %s", src, dst, msg))
	}
	fi, err := ag.Stat(ctx, dst)
	if err != nil {
		return nil, rpcErr(err)
	}
	return connect.NewResponse(&filesystem.MoveResponse{Entry: entry(dst, fi)}), nil
}

func (s *filesystemService) ListDir(ctx context.Context, req *connect.Request[filesystem.ListDirRequest]) (*connect.Response[filesystem.ListDirResponse], error) {
	ag, release, p, err := s.open(ctx, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	defer release()
	fi, err := ag.Stat(ctx, p)
	if err != nil {
		return nil, notFound(p, err)
	}
	if !fi.IsDir {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path '%s' is not a directory", p))
	}
	depth := int(max(req.Msg.GetDepth(), 1))
	out := &filesystem.ListDirResponse{}
	err = walk(ctx, ag, p, depth, func(full string, fi proto.FileInfo) {
		out.Entries = append(out.Entries, entry(full, fi))
	})
	if err != nil {
		return nil, notFound(p, err)
	}
	return connect.NewResponse(out), nil
}

// walk lists dir and, to depth levels, its subdirectories (symlinks not
// followed), calling fn for each entry, at most maxWatchEntries.
func walk(ctx context.Context, ag *agent.Client, dir string, depth int, fn func(string, proto.FileInfo)) error {
	n := 0
	var rec func(d string, level int) error
	rec = func(d string, level int) error {
		files, _, err := ag.List(ctx, d)
		if err != nil {
			if level > 1 && isNotFound(err) {
				return nil // gone meanwhile
			}
			return err
		}
		for _, f := range files {
			if n >= maxWatchEntries {
				return nil
			}
			n++
			full := path.Join(d, f.Name)
			fn(full, f)
			if f.IsDir && level < depth {
				if err := rec(full, level+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return rec(dir, 1)
}

func (s *filesystemService) Remove(ctx context.Context, req *connect.Request[filesystem.RemoveRequest]) (*connect.Response[filesystem.RemoveResponse], error) {
	ag, release, p, err := s.open(ctx, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := ag.Remove(ctx, p, true); err != nil {
		return nil, notFound(p, err)
	}
	return connect.NewResponse(&filesystem.RemoveResponse{}), nil
}

// tree is one listing of a watched folder: relative path -> file.
type tree map[string]proto.FileInfo

func scan(ctx context.Context, ag *agent.Client, root string, recursive bool) (tree, error) {
	depth := 1
	if recursive {
		depth = 64
	}
	t := tree{}
	err := walk(ctx, ag, root, depth, func(full string, fi proto.FileInfo) {
		t[strings.TrimPrefix(full, root+"/")] = fi
	})
	return t, err
}

// diff turns two listings into envd's events, in path order of the new
// listing (creates and writes), then removes.
func diff(root string, old, cur tree, withEntry bool) []*filesystem.FilesystemEvent {
	var evs []*filesystem.FilesystemEvent
	add := func(name string, t filesystem.EventType, fi *proto.FileInfo) {
		ev := &filesystem.FilesystemEvent{Name: name, Type: t}
		if withEntry && fi != nil {
			ev.Entry = entry(path.Join(root, name), *fi)
		}
		evs = append(evs, ev)
	}
	for _, name := range sortedKeys(cur) {
		fi := cur[name]
		was, ok := old[name]
		switch {
		case !ok:
			add(name, filesystem.EventType_EVENT_TYPE_CREATE, &fi)
			if !fi.IsDir && fi.Size > 0 {
				add(name, filesystem.EventType_EVENT_TYPE_WRITE, &fi)
			}
		case !fi.IsDir && (fi.Size != was.Size || !fi.ModTime.Equal(was.ModTime)):
			add(name, filesystem.EventType_EVENT_TYPE_WRITE, &fi)
		case fi.Mode != was.Mode:
			add(name, filesystem.EventType_EVENT_TYPE_CHMOD, &fi)
		}
	}
	for _, name := range sortedKeys(old) {
		if _, ok := cur[name]; !ok {
			add(name, filesystem.EventType_EVENT_TYPE_REMOVE, nil)
		}
	}
	return evs
}

func sortedKeys(t tree) []string {
	return slices.Sorted(maps.Keys(t))
}

// watchStart checks the folder and takes its first listing.
func (s *filesystemService) watchStart(ctx context.Context, p string, recursive bool) (*agent.Client, func(), string, tree, error) {
	ag, release, abs, err := s.open(ctx, p)
	if err != nil {
		return nil, nil, "", nil, err
	}
	fi, err := ag.Stat(ctx, abs)
	if err == nil && !fi.IsDir {
		err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path %s is not a directory", abs))
	}
	var t tree
	if err == nil {
		t, err = scan(ctx, ag, abs, recursive)
	}
	if err != nil {
		release()
		return nil, nil, "", nil, notFound(abs, err)
	}
	return ag, release, abs, t, nil
}

func (s *filesystemService) WatchDir(ctx context.Context, req *connect.Request[filesystem.WatchDirRequest], stream *connect.ServerStream[filesystem.WatchDirResponse]) error {
	m := req.Msg
	ag, release, root, old, err := s.watchStart(ctx, m.GetPath(), m.GetRecursive())
	if err != nil {
		return err
	}
	defer release()
	if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Start{Start: &filesystem.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	keep := time.NewTicker(keepalive(req.Header()))
	defer keep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-keep.C:
			if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Keepalive{Keepalive: &filesystem.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case <-poll.C:
			cur, err := scan(ctx, ag, root, m.GetRecursive())
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return notFound(root, err)
			}
			for _, ev := range diff(root, old, cur, m.GetIncludeEntry()) {
				if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Filesystem{Filesystem: ev}}); err != nil {
					return err
				}
			}
			old = cur
		}
	}
}

// watcher is a polled watch (CreateWatcher): its events wait for
// GetWatcherEvents.
type watcher struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []*filesystem.FilesystemEvent
	asked  time.Time
	err    error
}

func (w *watcher) stop() {
	w.cancel()
	<-w.done
}

func (s *filesystemService) CreateWatcher(ctx context.Context, req *connect.Request[filesystem.CreateWatcherRequest]) (*connect.Response[filesystem.CreateWatcherResponse], error) {
	m := req.Msg
	rq := reqOf(ctx)
	l := s.h.liveOf(rq.sb.ID)
	l.mu.Lock()
	n := len(l.watchers)
	l.mu.Unlock()
	if n >= maxWatchers {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d watchers in this sandbox, the most wisp allows", n))
	}
	// The watcher outlives the request: its context is the handler's.
	wctx, cancel := context.WithCancel(context.WithValue(s.h.closing, reqKey{}, rq))
	ag, release, root, old, err := s.watchStart(wctx, m.GetPath(), m.GetRecursive())
	if err != nil {
		cancel()
		return nil, err
	}
	id := token(8)
	w := &watcher{cancel: cancel, done: make(chan struct{}), asked: time.Now()}
	l.mu.Lock()
	l.watchers[id] = w
	l.mu.Unlock()
	go func() {
		defer close(w.done)
		defer release()
		defer cancel()
		poll := time.NewTicker(pollEvery)
		defer poll.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-poll.C:
			}
			w.mu.Lock()
			idle := time.Since(w.asked) > watcherIdle
			w.mu.Unlock()
			if idle {
				l.mu.Lock()
				delete(l.watchers, id)
				l.mu.Unlock()
				return
			}
			cur, err := scan(wctx, ag, root, m.GetRecursive())
			w.mu.Lock()
			if err != nil {
				if wctx.Err() == nil {
					w.err = notFound(root, err)
				}
				w.mu.Unlock()
				return
			}
			w.events = append(w.events, diff(root, old, cur, m.GetIncludeEntry())...)
			if len(w.events) > maxQueued {
				w.events = w.events[len(w.events)-maxQueued:]
			}
			w.mu.Unlock()
			old = cur
		}
	}()
	return connect.NewResponse(&filesystem.CreateWatcherResponse{WatcherId: id}), nil
}

func (s *filesystemService) watcherOf(ctx context.Context, id string) (*watcher, error) {
	l := s.h.liveOf(reqOf(ctx).sb.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.watchers[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found", id))
	}
	return w, nil
}

func (s *filesystemService) GetWatcherEvents(ctx context.Context, req *connect.Request[filesystem.GetWatcherEventsRequest]) (*connect.Response[filesystem.GetWatcherEventsResponse], error) {
	w, err := s.watcherOf(ctx, req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.asked = time.Now()
	evs := w.events
	w.events = nil
	if len(evs) == 0 && w.err != nil {
		return nil, w.err
	}
	return connect.NewResponse(&filesystem.GetWatcherEventsResponse{Events: evs}), nil
}

func (s *filesystemService) RemoveWatcher(ctx context.Context, req *connect.Request[filesystem.RemoveWatcherRequest]) (*connect.Response[filesystem.RemoveWatcherResponse], error) {
	id := req.Msg.GetWatcherId()
	w, err := s.watcherOf(ctx, id)
	if err != nil {
		return nil, err
	}
	l := s.h.liveOf(reqOf(ctx).sb.ID)
	l.mu.Lock()
	delete(l.watchers, id)
	l.mu.Unlock()
	w.stop()
	return connect.NewResponse(&filesystem.RemoveWatcherResponse{}), nil
}
