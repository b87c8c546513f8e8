package e2b

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/agent"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// live is what the daemon holds for a sandbox while it runs: its envd
// processes and watchers, and the home folders of its users.
type live struct {
	mu       sync.Mutex
	procs    map[uint32]*proc
	nextPid  uint32
	homes    map[string]string
	watchers map[string]*watcher
	logins   map[string][]string // login shells' environments (login.go)
	stamps   map[string]stamped  // the login files' last stamp, by user (login.go)
}

func (l *live) closeAll() {
	l.mu.Lock()
	procs := make([]*proc, 0, len(l.procs))
	for _, p := range l.procs {
		procs = append(procs, p)
	}
	ws := l.watchers
	l.procs, l.watchers = map[uint32]*proc{}, map[string]*watcher{}
	l.mu.Unlock()
	for _, p := range procs {
		p.abandon()
	}
	for _, w := range ws {
		w.stop()
	}
}

func (h *Handler) liveOf(id string) *live {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.live[id]
	if !ok {
		l = &live{procs: map[uint32]*proc{}, nextPid: 1000, homes: map[string]string{}, watchers: map[string]*watcher{}, logins: map[string][]string{}, stamps: map[string]stamped{}}
		h.live[id] = l
	}
	return l
}

// detachLive lets go of the streams of a sandbox being paused: its
// processes sleep with it and stay in its table (an input or a Connect
// after the resume attaches again); its watchers end.
func (h *Handler) detachLive(id string) {
	h.mu.Lock()
	l := h.live[id]
	h.mu.Unlock()
	if l == nil {
		return
	}
	l.mu.Lock()
	procs := slices.Collect(maps.Values(l.procs))
	ws := l.watchers
	l.watchers = map[string]*watcher{}
	l.mu.Unlock()
	for _, p := range procs {
		p.detach()
	}
	for _, w := range ws {
		w.stop()
	}
}

// dropLive ends the streams of a sandbox that is killed.
func (h *Handler) dropLive(id string) {
	h.mu.Lock()
	l := h.live[id]
	delete(h.live, id)
	h.mu.Unlock()
	if l != nil {
		l.closeAll()
	}
}

type reqKey struct{}

// envdReq is what envd's handlers know of a request: its sandbox and the
// user it acts as.
type envdReq struct {
	sb   Sandbox
	user string
}

// serveEnvd checks the sandbox's access token (or a file URL's signature)
// and serves its envd.
func (h *Handler) serveEnvd(w http.ResponseWriter, r *http.Request, id string) {
	sb, ok := h.store.get(id)
	if !ok {
		apiError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %q not found", id))
		return
	}
	if r.URL.Path != "/health" && !h.envdAuthorized(r, sb) {
		apiError(w, http.StatusUnauthorized, "invalid or missing X-Access-Token (or file URL signature)")
		return
	}
	if sb.Paused && sb.AutoResume && r.URL.Path != "/health" {
		var err error
		if sb, err = h.resume(r.Context(), id, DefaultTimeout); err != nil {
			writeErr(w, err)
			return
		}
	}
	if sb.Paused {
		// As E2B: a paused sandbox answers nothing until connect.
		apiError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %q is paused: resume it with Sandbox.connect()", id))
		return
	}
	user := sb.User
	if u, _, ok := r.BasicAuth(); ok && u != "" {
		user = u
	}
	if u := r.URL.Query().Get("username"); u != "" && r.URL.Path == "/files" {
		user = u
	}
	ctx := context.WithValue(r.Context(), reqKey{}, envdReq{sb: sb, user: user})
	h.envd.ServeHTTP(w, r.WithContext(ctx))
}

func reqOf(ctx context.Context) envdReq { return ctx.Value(reqKey{}).(envdReq) }

// signedBy finds the sandbox whose access token signed a file URL.
func (h *Handler) signedBy(r *http.Request) (Sandbox, bool) {
	for _, sb := range h.store.list() {
		if validSignature(r, sb) {
			return sb, true
		}
	}
	return Sandbox{}, false
}

func (h *Handler) envdAuthorized(r *http.Request, sb Sandbox) bool {
	if t := r.Header.Get("X-Access-Token"); t != "" {
		return subtle.ConstantTimeCompare([]byte(t), []byte(sb.AccessToken)) == 1
	}
	return validSignature(r, sb)
}

// validSignature checks a file URL's signature: v1_ and the base64 of
// the SHA-256 of path:operation:user:token[:expiry], as the SDKs make it.
func validSignature(r *http.Request, sb Sandbox) bool {
	if r.URL.Path != "/files" {
		return false
	}
	q := r.URL.Query()
	sig := q.Get("signature")
	if sig == "" {
		return false
	}
	op := "read"
	if r.Method == http.MethodPost {
		op = "write"
	}
	raw := q.Get("path") + ":" + op + ":" + q.Get("username") + ":" + sb.AccessToken
	if exp := q.Get("signature_expiration"); exp != "" {
		n, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || time.Now().Unix() > n {
			return false
		}
		raw += ":" + exp
	}
	sum := sha256.Sum256([]byte(raw))
	want := "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
	return subtle.ConstantTimeCompare([]byte(sig), []byte(want)) == 1
}

func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) envs(w http.ResponseWriter, r *http.Request) {
	env, err := h.opt.Sprites.ExecEnv(reqOf(r.Context()).sb.ID)
	if err != nil {
		writeErr(w, err)
		return
	}
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	writeJSON(w, http.StatusOK, m)
}

// agentOf returns the agent of the request's sandbox, held until release.
func (h *Handler) agentOf(ctx context.Context) (*agent.Client, func(), error) {
	return h.opt.Sprites.Agent(ctx, reqOf(ctx).sb.ID)
}

// home returns user's home folder in the sandbox (read from its
// /etc/passwd once).
func (h *Handler) home(ctx context.Context, ag *agent.Client, user string) (string, error) {
	rq := reqOf(ctx)
	l := h.liveOf(rq.sb.ID)
	l.mu.Lock()
	hm, ok := l.homes[user]
	l.mu.Unlock()
	if ok {
		return hm, nil
	}
	var buf strings.Builder
	if _, err := readGuestFile(ctx, ag, "/etc/passwd", &limitedWriter{w: &buf, n: 1 << 20}); err != nil {
		return "", err
	}
	hm = ""
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) >= 7 && (f[0] == user || f[2] == user) {
			hm = f[5]
			break
		}
	}
	if hm == "" {
		if user != "root" {
			return "", fmt.Errorf("user %q does not exist in the sandbox: %w", user, errdefs.ErrInvalid)
		}
		hm = "/root"
	}
	l.mu.Lock()
	l.homes[user] = hm
	l.mu.Unlock()
	return hm, nil
}

// resolve makes p absolute: a relative path is under the user's home.
func (h *Handler) resolve(ctx context.Context, ag *agent.Client, p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p), nil
	}
	user := reqOf(ctx).user
	if user == "" {
		user = "root"
	}
	hm, err := h.home(ctx, ag, user)
	if err != nil {
		return "", err
	}
	if p == "" || p == "~" {
		return hm, nil
	}
	p = strings.TrimPrefix(p, "~/")
	return path.Join(hm, p), nil
}

// readGuestFile streams a guest file to w and returns its info.
func readGuestFile(ctx context.Context, ag *agent.Client, p string, w io.Writer) (proto.FileInfo, error) {
	st, err := ag.Open(ctx, proto.Request{Op: proto.OpRead, Path: p})
	if err != nil {
		return proto.FileInfo{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	resp, err := st.Response()
	if err != nil {
		return proto.FileInfo{}, err
	}
	if resp.File == nil {
		return proto.FileInfo{}, fmt.Errorf("%w: read response without file", agent.ErrAgent)
	}
	for {
		t, b, err := st.ReadFrame()
		if err != nil {
			return *resp.File, fmt.Errorf("%w: read %s: %w", agent.ErrAgent, p, err)
		}
		switch t {
		case proto.TData:
			if _, err := w.Write(b); err != nil {
				return *resp.File, err
			}
		case proto.TEnd:
			return *resp.File, nil
		case proto.TResponse:
			var r proto.Response
			proto.DecodeJSON(b, &r)
			return *resp.File, &agent.GuestError{Kind: r.Kind, Msg: r.Error}
		default:
			return *resp.File, fmt.Errorf("%w: unexpected frame %d reading %s", agent.ErrAgent, t, p)
		}
	}
}

// writeGuestFile writes r to the guest file p, owned by user, replacing
// it whole (the guest renames a temporary file into place).
func writeGuestFile(ctx context.Context, ag *agent.Client, p, user string, r io.Reader) error {
	st, err := ag.Open(ctx, proto.Request{Op: proto.OpWrite, Path: p, User: user, Mode: 0o644})
	if err != nil {
		return err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	if err := agent.CopyIn(st, r, proto.TData); err != nil {
		return err
	}
	if err := st.WriteFrame(proto.TEnd, nil); err != nil {
		return err
	}
	_, err = st.Response()
	return err
}

// call runs a one-answer agent request (with a user, which the agent
// client's helpers do not pass).
func call(ctx context.Context, ag *agent.Client, req proto.Request) (proto.Response, error) {
	st, err := ag.Open(ctx, req)
	if err != nil {
		return proto.Response{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	return st.Response()
}

// mkdirs makes dir and its missing parents, each owned by user. It
// reports whether dir was made.
func mkdirs(ctx context.Context, ag *agent.Client, dir, user string) (bool, error) {
	fi, err := ag.Stat(ctx, dir)
	if err == nil {
		if !fi.IsDir {
			return false, &agent.GuestError{Kind: proto.KindExists, Msg: dir + " exists and is not a directory"}
		}
		return false, nil
	}
	if !isNotFound(err) {
		return false, err
	}
	if parent := path.Dir(dir); parent != dir {
		if _, err := mkdirs(ctx, ag, parent, user); err != nil {
			return false, err
		}
	}
	_, err = call(ctx, ag, proto.Request{Op: proto.OpMkdir, Path: dir, Mode: 0o755, User: user})
	var ge *agent.GuestError
	if errors.As(err, &ge) && ge.Kind == proto.KindExists {
		return false, nil
	}
	return err == nil, err
}

func isNotFound(err error) bool {
	var ge *agent.GuestError
	return errors.As(err, &ge) && ge.Kind == proto.KindNotFound
}

func (h *Handler) readFile(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ag, release, err := h.agentOf(ctx)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer release()
	p, err := h.resolve(ctx, ag, r.URL.Query().Get("path"))
	if err != nil {
		writeErr(w, err)
		return
	}
	fi, err := ag.Stat(ctx, p)
	if err != nil {
		writeErr(w, err)
		return
	}
	if fi.IsDir {
		apiError(w, http.StatusBadRequest, p+" is a directory")
		return
	}
	// The headers wait for the first bytes, so that an error before them
	// is still answered as one.
	lw := &lazyWriter{w: w, start: func() {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": path.Base(p)}))
	}}
	if _, err := readGuestFile(ctx, ag, p, lw); err != nil {
		if !lw.started {
			writeErr(w, err)
		}
		return
	}
	if !lw.started {
		lw.start()
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	}
}

// lazyWriter calls start before its first write.
type lazyWriter struct {
	w       http.ResponseWriter
	start   func()
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.start()
	}
	return l.w.Write(p)
}

// limitedWriter fails writes beyond n bytes.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, errors.New("file too large")
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

// writtenEntry is envd's answer of a written file.
type writtenEntry struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

func (h *Handler) writeFiles(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	for k := range r.Header {
		if strings.HasPrefix(http.CanonicalHeaderKey(k), "X-Metadata-") {
			apiError(w, http.StatusBadRequest, "file metadata is not supported by wisp")
			return
		}
	}
	ag, release, err := h.agentOf(ctx)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer release()
	user := reqOf(ctx).user
	one := func(name string, body io.Reader) (writtenEntry, error) {
		p, err := h.resolve(ctx, ag, name)
		if err != nil {
			return writtenEntry{}, err
		}
		if _, err := mkdirs(ctx, ag, path.Dir(p), user); err != nil {
			return writtenEntry{}, err
		}
		if err := writeGuestFile(ctx, ag, p, user, body); err != nil {
			return writtenEntry{}, err
		}
		return writtenEntry{Name: path.Base(p), Type: "file", Path: p}, nil
	}
	qpath := r.URL.Query().Get("path")
	var body io.Reader = r.Body
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			apiError(w, http.StatusBadRequest, "gzip body: "+err.Error())
			return
		}
		defer zr.Close()
		body = zr
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	out := []writtenEntry{}
	if mt != "multipart/form-data" {
		if qpath == "" {
			apiError(w, http.StatusBadRequest, "path is required")
			return
		}
		e, err := one(qpath, body)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, append(out, e))
		return
	}
	mr := multipart.NewReader(body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			apiError(w, http.StatusBadRequest, "multipart body: "+err.Error())
			return
		}
		if part.FormName() != "file" {
			part.Close()
			continue
		}
		name := qpath
		if name == "" {
			name = part.FileName()
		}
		if name == "" {
			apiError(w, http.StatusBadRequest, "a file part without a path")
			return
		}
		e, err := one(name, part)
		part.Close()
		if err != nil {
			writeErr(w, err)
			return
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		apiError(w, http.StatusBadRequest, "no file in the request")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// execIO sends stdout and stderr to out.
func execIO(out io.Writer) agent.ExecIO {
	return agent.ExecIO{Stdout: out, Stderr: out}
}
