package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// Timeouts of sandboxes: E2B's default, and the longest wisp accepts.
const (
	DefaultTimeout = 300 * time.Second
	MaxTimeout     = 30 * 24 * time.Hour
)

// DefaultUser is the user of E2B's templates: the SDKs' code assumes it
// (home /home/user, passwordless sudo).
const DefaultUser = "user"

// BackendKey is the metadata key that chooses a sandbox's backend
// (qemu, gvisor), wisp's own; without it the daemon's default.
const BackendKey = "wisp.backend"

// templates maps E2B template names to wisp images; any other name is an
// image of that name.
var templates = map[string]string{"base": "dev"}

// newSandbox is the body of a create.
type newSandbox struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int              `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	AutoPause           bool              `json:"autoPause"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Secure              *bool             `json:"secure"`
	AutoResume          *struct {
		Enabled bool `json:"enabled"`
	} `json:"autoResume"`
	Network *struct {
		AllowOut []string        `json:"allowOut"`
		DenyOut  []string        `json:"denyOut"`
		Rules    json.RawMessage `json:"rules"`
	} `json:"network"`
	MCP          json.RawMessage `json:"mcp"`
	VolumeMounts json.RawMessage `json:"volumeMounts"`
}

func decodeBody(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("request body: %v: %w", err, errdefs.ErrInvalid)
	}
	return nil
}

func timeoutOf(secs *int) (time.Duration, error) {
	if secs == nil {
		return DefaultTimeout, nil
	}
	d := time.Duration(*secs) * time.Second
	if d < 0 || d > MaxTimeout {
		return 0, fmt.Errorf("timeout %d s out of range 0-%d: %w", *secs, int(MaxTimeout/time.Second), errdefs.ErrInvalid)
	}
	return d, nil
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	var req newSandbox
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if len(req.MCP) > 0 && string(req.MCP) != "null" {
		apiError(w, http.StatusBadRequest, "MCP gateways are not supported by wisp")
		return
	}
	if len(req.VolumeMounts) > 0 && string(req.VolumeMounts) != "null" && string(req.VolumeMounts) != "[]" {
		apiError(w, http.StatusBadRequest, "volume mounts are not supported by wisp")
		return
	}
	if n := req.Network; n != nil && (len(n.AllowOut) > 0 || len(n.DenyOut) > 0 || (len(n.Rules) > 0 && string(n.Rules) != "null" && string(n.Rules) != "{}")) {
		apiError(w, http.StatusBadRequest, "network rules are not supported by wisp's E2B API: use allowInternetAccess, or `wisp policy set` on the sandbox")
		return
	}
	timeout, err := timeoutOf(req.Timeout)
	if err != nil {
		writeErr(w, err)
		return
	}
	tpl := req.TemplateID
	if tpl == "" {
		tpl = "base"
	}
	img, ok := templates[tpl]
	if !ok {
		img = tpl
	}
	src := img
	if d, ok := h.derived(img); ok {
		img = d // the template's image with E2B's user made
	}
	for k := range req.EnvVars {
		if err := sprite.ValidateEnvKey(k); err != nil {
			writeErr(w, err)
			return
		}
	}
	env := make([]string, 0, len(req.EnvVars))
	for k, v := range req.EnvVars {
		env = append(env, k+"="+v)
	}
	o := sprite.CreateOptions{
		Name: newID(), Image: img, Backend: h.opt.Backend, CPUs: h.opt.CPUs, MemoryMiB: h.opt.MemoryMiB,
		Env: env,
		// An E2B sandbox runs until its timeout: it does not sleep when
		// idle (a background job must go on).
		IdleSeconds: -1,
	}
	if b := req.Metadata[BackendKey]; b != "" {
		o.Backend = b // wisp's own: the bench measures each backend
	}
	if req.AllowInternetAccess != nil && !*req.AllowInternetAccess {
		o.Policy = network.Policy{Mode: network.DenyAll}
	}
	t0 := time.Now()
	_, err = h.opt.Sprites.Create(r.Context(), o)
	if err != nil && img != src && errdefs.Kind(err) == errdefs.ErrInvalid {
		// The derived image does not fit (a disk smaller than it):
		// the template's own image does what it did before.
		h.log.Warn("e2b: the template's derived image did not fit; using the image", "image", img, "err", err)
		o.Image, img = src, src
		_, err = h.opt.Sprites.Create(r.Context(), o)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	tCreated := time.Now()
	sb := Sandbox{
		ID: o.Name, TemplateID: tpl, Image: img, ClientID: "wisp", Metadata: req.Metadata,
		AccessToken: token(16), StartedAt: time.Now().UTC(), AutoPause: req.AutoPause,
		AutoResume: req.AutoResume != nil && req.AutoResume.Enabled,
	}
	sb.EndAt = sb.StartedAt.Add(timeout)
	fail := func(err error) {
		h.opt.Sprites.Destroy(context.WithoutCancel(r.Context()), o.Name)
		h.store.remove(o.Name)
		writeErr(w, err)
	}
	user, made, err := h.ensureUser(r.Context(), o.Name)
	if err != nil {
		fail(err)
		return
	}
	sb.User = user
	if made && img == src {
		h.derive(o) // the template's image with its user, for the next creates
	}
	if _, err := h.opt.Sprites.SetURLPublic(o.Name, true); err != nil {
		fail(err)
		return
	}
	if err := h.store.put(sb); err != nil {
		fail(err)
		return
	}
	h.log.Info("e2b sandbox created", "sandbox", sb.ID, "template", tpl, "image", img,
		"sprite", tCreated.Sub(t0).Round(time.Millisecond), "user", time.Since(tCreated).Round(time.Millisecond))
	if !h.opt.RealLogin {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.warmLogin(sb)
		}()
	}
	writeJSON(w, http.StatusCreated, h.detail(sb, true))
}

// userScript makes E2B's user where the image lacks it: its entries in
// /etc/passwd, group, shadow and gshadow, the sudo group, passwordless
// sudo. Shell builtins only: every process costs under gVisor (useradd
// took ~360 ms, this takes a few). It prints the user's ID, or nothing
// where the image cannot have the user (no bash: a minimal image).
const userScript = `u=` + DefaultUser + `
[ -x /bin/bash ] || exit 0
taken() { while IFS=: read -r n x i rest; do [ "$i" = "$1" ] && return 0; done < "$2"; return 1; }
id=1001
while taken $id /etc/passwd || taken $id /etc/group; do id=$((id+1)); done
echo "$u:x:$id:$id::/home/$u:/bin/bash" >> /etc/passwd
echo "$u:x:$id:" >> /etc/group
[ -f /etc/shadow ] && echo "$u:*:20000:0:99999:7:::" >> /etc/shadow
[ -f /etc/gshadow ] && echo "$u:!::" >> /etc/gshadow
out=
while IFS= read -r line || [ -n "$line" ]; do
  case $line in sudo:*:) line="$line$u" ;; sudo:*) line="$line,$u" ;; esac
  out="$out$line
"
done < /etc/group
printf %s "$out" > /etc/group
if [ -d /etc/sudoers.d ]; then
  umask 0337
  echo "$u ALL=(ALL:ALL) NOPASSWD: ALL" > /etc/sudoers.d/90-e2b-user
fi
echo $id`

// ensureUser makes E2B's default user in the sandbox if its image lacks
// it (the script above, then its home from /etc/skel through the agent's
// file calls) and returns the user processes run as by default: "" where
// the image cannot have it (the agent's default then).
func (h *Handler) ensureUser(ctx context.Context, id string) (user string, made bool, err error) {
	ag, release, err := h.opt.Sprites.Agent(ctx, id)
	if err != nil {
		return "", false, err
	}
	defer release()
	var passwd strings.Builder
	if _, err := readGuestFile(ctx, ag, "/etc/passwd", &limitedWriter{w: &passwd, n: 1 << 20}); err != nil {
		return "", false, err
	}
	if strings.HasPrefix(passwd.String(), DefaultUser+":") || strings.Contains(passwd.String(), "\n"+DefaultUser+":") {
		return DefaultUser, false, nil // the image has it
	}
	var out strings.Builder
	exit, err := ag.Exec(ctx, proto.ExecRequest{Argv: []string{"/bin/sh", "-c", userScript}, User: "root"}, execIO(&limitedWriter{w: &out, n: 4096}))
	if err != nil {
		return "", false, err
	}
	if exit.Code != 0 {
		return "", false, fmt.Errorf("making user %q in the sandbox: exit %d %s %s", DefaultUser, exit.Code, exit.Error, out.String())
	}
	if strings.TrimSpace(out.String()) == "" {
		return "", false, nil
	}
	home := "/home/" + DefaultUser
	if _, err := call(ctx, ag, proto.Request{Op: proto.OpMkdir, Path: home, Mode: 0o750, Recursive: true, User: DefaultUser}); err != nil {
		return "", false, fmt.Errorf("making %s: %w", home, err)
	}
	skel, _, err := ag.List(ctx, "/etc/skel")
	if err != nil && !isNotFound(err) {
		return "", false, err
	}
	var g errgroup.Group
	for _, f := range skel {
		if f.IsDir || f.Link != "" {
			continue
		}
		g.Go(func() error {
			var b bytes.Buffer
			if _, err := readGuestFile(ctx, ag, "/etc/skel/"+f.Name, &limitedWriter{w: &b, n: 1 << 20}); err != nil {
				return err
			}
			return writeGuestFile(ctx, ag, home+"/"+f.Name, DefaultUser, &b)
		})
	}
	if err := g.Wait(); err != nil {
		return "", false, err
	}
	return DefaultUser, true, nil
}

// state is E2B's state of a sandbox.
func (sb Sandbox) state() string {
	if sb.Paused {
		return "paused"
	}
	return "running"
}

// detail is E2B's Sandbox (create, connect) or SandboxDetail (info).
func (h *Handler) detail(sb Sandbox, withToken bool) map[string]any {
	d := map[string]any{
		"sandboxID":   sb.ID,
		"templateID":  sb.TemplateID,
		"alias":       sb.TemplateID,
		"clientID":    sb.ClientID,
		"envdVersion": EnvdVersion,
		"startedAt":   sb.StartedAt.Format(time.RFC3339Nano),
		"endAt":       sb.EndAt.UTC().Format(time.RFC3339Nano),
		"metadata":    orEmpty(sb.Metadata),
		"state":       sb.state(),
		"lifecycle":   map[string]any{"onTimeout": onTimeout(sb), "autoResume": sb.AutoResume},
	}
	if h.opt.Domain != "" {
		d["domain"] = h.opt.Domain
	}
	if rec, err := h.opt.Sprites.Get(sb.ID); err == nil {
		d["cpuCount"] = rec.CPUs
		d["memoryMB"] = rec.MemoryMiB
		d["diskSizeMB"] = rec.DiskGiB * 1024
		d["allowInternetAccess"] = rec.Policy.Mode != network.DenyAll
	}
	if withToken {
		d["envdAccessToken"] = sb.AccessToken
	}
	return d
}

func onTimeout(sb Sandbox) string {
	if sb.AutoPause {
		return "pause"
	}
	return "kill"
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// sandbox finds the sandbox of the request's path, answering 404 itself.
func (h *Handler) sandbox(w http.ResponseWriter, r *http.Request) (Sandbox, bool) {
	id := r.PathValue("id")
	sb, ok := h.store.get(id)
	if ok && h.gone(id) {
		ok = false
	}
	if !ok {
		apiError(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", id))
	}
	return sb, ok
}

// sandboxes returns the sandboxes oldest first, those whose sprite is gone
// (destroyed through wisp's own API) forgotten.
func (h *Handler) sandboxes() []Sandbox {
	all := h.store.list()
	out := all[:0]
	for _, sb := range all {
		if !h.gone(sb.ID) {
			out = append(out, sb)
		}
	}
	return out
}

// gone reports whether the sandbox's sprite no longer exists, and then
// forgets the sandbox.
func (h *Handler) gone(id string) bool {
	if _, err := h.opt.Sprites.Record(id); errdefs.Kind(err) != errdefs.ErrNotFound {
		return false
	}
	h.dropLive(id)
	h.store.remove(id)
	h.log.Info("e2b sandbox forgotten: its sprite is gone", "sandbox", id)
	return true
}

func (h *Handler) info(w http.ResponseWriter, r *http.Request) {
	if sb, ok := h.sandbox(w, r); ok {
		writeJSON(w, http.StatusOK, h.detail(sb, true))
	}
}

// list answers GET /v2/sandboxes: filtered by metadata (a query string of
// its own: k=v&k2=v2) and state, oldest first, paged by X-Next-Token.
func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	want, err := metadataFilter(q.Get("metadata"))
	if err != nil {
		writeErr(w, err)
		return
	}
	states := map[string]bool{}
	for _, v := range q["state"] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				states[s] = true
			}
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 100 {
			apiError(w, http.StatusBadRequest, "limit: want 1-100")
			return
		}
	}
	next := q.Get("nextToken")
	out := []map[string]any{}
	started := next == ""
	token := ""
	for _, sb := range h.sandboxes() {
		if !started {
			if sb.ID != next {
				continue
			}
			started = true
		}
		if len(states) > 0 && !states[sb.state()] {
			continue
		}
		if !matches(sb.Metadata, want) {
			continue
		}
		if len(out) == limit {
			token = sb.ID
			break
		}
		out = append(out, h.detail(sb, false))
	}
	if token != "" {
		w.Header().Set("X-Next-Token", token)
	}
	writeJSON(w, http.StatusOK, out)
}

// listV1 answers GET /sandboxes: the running sandboxes.
func (h *Handler) listV1(w http.ResponseWriter, r *http.Request) {
	want, err := metadataFilter(r.URL.Query().Get("metadata"))
	if err != nil {
		writeErr(w, err)
		return
	}
	out := []map[string]any{}
	for _, sb := range h.sandboxes() {
		if !sb.Paused && matches(sb.Metadata, want) {
			out = append(out, h.detail(sb, false))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// metadataFilter reads the metadata parameter: a query string whose keys
// and values the SDKs escape once more.
func metadataFilter(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	vs, err := url.ParseQuery(s)
	if err != nil {
		return nil, fmt.Errorf("metadata filter %q: %v: %w", s, err, errdefs.ErrInvalid)
	}
	m := map[string]string{}
	for k, v := range vs {
		uk, err1 := url.QueryUnescape(k)
		uv, err2 := url.QueryUnescape(v[0])
		if err1 != nil || err2 != nil {
			uk, uv = k, v[0]
		}
		m[uk] = uv
	}
	return m, nil
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func (h *Handler) kill(w http.ResponseWriter, r *http.Request) {
	sb, ok := h.sandbox(w, r)
	if !ok {
		return
	}
	if err := h.destroy(r.Context(), sb.ID); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// destroy ends the sandbox's processes, destroys its sprite and forgets it.
func (h *Handler) destroy(ctx context.Context, id string) error {
	h.dropLive(id)
	err := h.opt.Sprites.Destroy(context.WithoutCancel(ctx), id)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if err := h.store.remove(id); err != nil {
		return err
	}
	h.log.Info("e2b sandbox killed", "sandbox", id)
	return nil
}

func (h *Handler) setTimeout(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Timeout *int `json:"timeout"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.Timeout == nil {
		apiError(w, http.StatusBadRequest, "timeout (seconds) is required")
		return
	}
	d, err := timeoutOf(req.Timeout)
	if err != nil {
		writeErr(w, err)
		return
	}
	h.extend(w, r, d, true)
}

// refresh is E2B's older keep-alive: {duration} seconds more.
func (h *Handler) refresh(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Duration *int `json:"duration"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	d, err := timeoutOf(req.Duration)
	if err != nil {
		writeErr(w, err)
		return
	}
	h.extend(w, r, d, false)
}

// extend sets the sandbox's end to now+d (set) or to at least that.
func (h *Handler) extend(w http.ResponseWriter, r *http.Request, d time.Duration, set bool) {
	_, found, err := h.store.update(r.PathValue("id"), func(sb *Sandbox) bool {
		end := time.Now().Add(d).UTC()
		if !set && end.Before(sb.EndAt) {
			return false
		}
		sb.EndAt = end
		return true
	})
	switch {
	case !found:
		apiError(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", r.PathValue("id")))
	case err != nil:
		writeErr(w, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (h *Handler) pause(w http.ResponseWriter, r *http.Request) {
	sb, ok := h.sandbox(w, r)
	if !ok {
		return
	}
	if sb.Paused {
		apiError(w, http.StatusConflict, fmt.Sprintf("sandbox %q is already paused", sb.ID))
		return
	}
	if err := h.sleep(r.Context(), sb.ID); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// sleep pauses a sandbox: its sprite sleeps (memory and processes kept on
// disk) and envd answers for it no more until a connect.
func (h *Handler) sleep(ctx context.Context, id string) error {
	if _, _, err := h.store.update(id, func(sb *Sandbox) bool { sb.Paused = true; return true }); err != nil {
		return err
	}
	h.detachLive(id) // the processes sleep with the sprite, in its table still
	_, err := h.opt.Sprites.Sleep(context.WithoutCancel(ctx), id)
	if err != nil && errdefs.Kind(err) == errdefs.ErrState {
		// Stopped (or asleep already): it is as paused as it gets.
		err = nil
	}
	if err != nil {
		h.store.update(id, func(sb *Sandbox) bool { sb.Paused = false; return true })
		return err
	}
	h.log.Info("e2b sandbox paused", "sandbox", id)
	return nil
}

// connect resumes a paused sandbox (its sprite wakes with its processes)
// and gives a running one at least the timeout asked for.
func (h *Handler) connect(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Timeout *int `json:"timeout"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	d, err := timeoutOf(req.Timeout)
	if err != nil {
		writeErr(w, err)
		return
	}
	sb, ok := h.sandbox(w, r)
	if !ok {
		return
	}
	code := http.StatusOK
	if sb.Paused {
		code = http.StatusCreated
	}
	if sb, err = h.resume(r.Context(), sb.ID, d); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, code, h.detail(sb, true))
}

// resume wakes a paused sandbox and gives it (paused or not) at least d.
func (h *Handler) resume(ctx context.Context, id string, d time.Duration) (Sandbox, error) {
	if sb, ok := h.store.get(id); ok && sb.Paused {
		_, release, err := h.opt.Sprites.Agent(ctx, id)
		if err != nil {
			return Sandbox{}, err
		}
		release()
		h.log.Info("e2b sandbox resumed", "sandbox", id)
	}
	sb, _, err := h.store.update(id, func(sb *Sandbox) bool {
		end := time.Now().Add(d).UTC()
		if sb.Paused || end.After(sb.EndAt) {
			sb.EndAt = end
		}
		sb.Paused = false
		return true
	})
	return sb, err
}

func (h *Handler) metrics(w http.ResponseWriter, r *http.Request) {
	sb, ok := h.sandbox(w, r)
	if !ok {
		return
	}
	rec, err := h.opt.Sprites.Get(sb.ID)
	if err != nil {
		writeErr(w, err)
		return
	}
	m := map[string]any{
		"timestamp": time.Now().UTC().Format(time.RFC3339), "timestampUnix": time.Now().Unix(),
		"cpuCount": rec.CPUs, "cpuUsedPct": 0.0,
		"memTotal": int64(rec.MemoryMiB) << 20, "memUsed": 0, "memCache": 0,
		"diskUsed": rec.DiskUsedBytes, "diskTotal": int64(rec.DiskGiB) << 30,
	}
	if h.opt.Usage != nil {
		if cpu, mem, ok := h.opt.Usage(sb.ID); ok {
			m["cpuUsedPct"] = cpu / float64(max(rec.CPUs, 1)) // E2B's: of all the sandbox's cores
			m["memUsed"] = mem
		}
	}
	if !sb.Paused && rec.State == sprite.Running {
		ag, release, err := h.opt.Sprites.Agent(r.Context(), sb.ID)
		if err == nil {
			if info, err := ag.Info(r.Context()); err == nil {
				m["memTotal"] = info.MemTotal
				if m["memUsed"] == 0 {
					m["memUsed"] = info.MemTotal - info.MemAvailable
				}
			}
			release()
		}
	}
	writeJSON(w, http.StatusOK, []any{m})
}

// timeoutLoop kills (or, with autoPause, pauses) sandboxes whose time is
// up, every tick until ctx ends.
func (h *Handler) timeoutLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failed := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for _, sb := range h.store.list() {
			if sb.Paused || now.Before(sb.EndAt) || now.Before(failed[sb.ID]) {
				continue
			}
			var err error
			if sb.AutoPause {
				err = h.sleep(ctx, sb.ID)
			} else {
				err = h.destroy(ctx, sb.ID)
			}
			if err != nil {
				h.log.Warn("e2b timeout", "sandbox", sb.ID, "err", err)
				failed[sb.ID] = now.Add(10 * time.Second)
				continue
			}
			delete(failed, sb.ID)
			h.log.Info("e2b sandbox timed out", "sandbox", sb.ID, "paused", sb.AutoPause)
		}
	}
}

// maxForks bounds the sandboxes one fork makes.
const maxForks = 10

// fork makes count sandboxes from the sandbox's disk as it is now (wisp's
// fork: files, not processes or memory), each with the parent's template,
// metadata, env and user, a token of its own and the timeout asked for.
// Each fork succeeds or fails apart, as E2B's do.
func (h *Handler) fork(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Timeout *int `json:"timeout"`
		Count   *int `json:"count"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	timeout, err := timeoutOf(req.Timeout)
	if err != nil {
		writeErr(w, err)
		return
	}
	count := 1
	if req.Count != nil {
		count = *req.Count
	}
	if count < 1 || count > maxForks {
		apiError(w, http.StatusBadRequest, fmt.Sprintf("count %d: want 1-%d", count, maxForks))
		return
	}
	parent, ok := h.sandbox(w, r)
	if !ok {
		return
	}
	out := make([]map[string]any, 0, count)
	for range count {
		sb := parent
		sb.ID, sb.AccessToken, sb.StartedAt, sb.Paused = newID(), token(16), time.Now().UTC(), false
		sb.EndAt = sb.StartedAt.Add(timeout)
		err := h.forkOne(r.Context(), parent.ID, sb)
		if err != nil {
			out = append(out, map[string]any{"error": map[string]any{"code": httpStatus(err), "message": err.Error()}})
			continue
		}
		h.log.Info("e2b sandbox forked", "sandbox", sb.ID, "from", parent.ID)
		out = append(out, map[string]any{"sandbox": h.detail(sb, true)})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) forkOne(ctx context.Context, parent string, sb Sandbox) error {
	if _, err := h.opt.Sprites.Fork(ctx, parent, "", sb.ID); err != nil {
		return err
	}
	fail := func(err error) error {
		h.opt.Sprites.Destroy(context.WithoutCancel(ctx), sb.ID)
		return err
	}
	if _, err := h.opt.Sprites.SetURLPublic(sb.ID, true); err != nil {
		return fail(err)
	}
	if err := h.store.put(sb); err != nil {
		return fail(err)
	}
	return nil
}
