package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/blob"
	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// Start reconciles this host's sprites with the cluster after a daemon
// start (after the Manager's Recover): a sprite still claimed by this
// host is bound to the new lease; one no host took meanwhile is claimed
// again; one another host took over (or published anew) while this
// daemon was down is stale here and goes, its VM ended. A sprite from
// before cluster mode is registered.
func (f *Fleet) Start(ctx context.Context) error {
	for _, rec := range f.m.List() {
		if err := f.reconcile(ctx, rec.Name); err != nil {
			f.log.Error("reconcile with the cluster", "sprite", rec.Name, "err", err)
		}
	}
	// Sprites stopped when this host lost its lease, before this start.
	f.restoreLost(ctx)
	// Claims recorded for sprites that are not here (a crash between a
	// park and its release, or between a claim and its fetch).
	f.mu.Lock()
	var dangling []string
	for name := range f.owned {
		if _, err := f.m.Get(name); err != nil {
			dangling = append(dangling, name)
		}
	}
	f.mu.Unlock()
	for _, name := range dangling {
		c, _ := f.claimOf(name)
		if err := f.node.Release(ctx, name, c.Fence); err != nil && !errors.Is(err, errdefs.ErrConflict) && !errors.Is(err, errdefs.ErrNotFound) {
			f.log.Warn("release a claim left by a crash", "sprite", name, "err", err)
			continue
		}
		f.setOwned(name, claim{}, false)
	}
	// Sprites at rest here and still this host's: a crash cut their
	// publish short (or they came by a move and were never woken). They
	// are published and let go, as at a sleep, in the background.
	for _, rec := range f.m.List() {
		if _, mine := f.claimOf(rec.Name); mine && (rec.State == sprite.Sleeping || rec.State == sprite.Stopped) {
			go f.AtRest(ctx, rec.Name)
		}
	}
	return nil
}

func (f *Fleet) reconcile(ctx context.Context, name string) error {
	c, mine := f.claimOf(name)
	s, err := f.node.Get(ctx, name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		fence, err := f.node.Create(ctx, name)
		if err != nil {
			return err
		}
		f.log.Info("sprite joined the cluster", "sprite", name)
		return f.setOwned(name, claim{Fence: fence}, true)
	case err != nil:
		return err
	case mine && s.Owner == f.ID() && s.Fence == c.Fence:
		return f.node.Reclaim(ctx, name, c.Fence)
	case mine && s.Owner == "" && headGen(s) == c.Generation:
		fence, err := f.node.Claim(ctx, name)
		if err == nil {
			c.Fence = fence
			return f.setOwned(name, c, true)
		}
		if !errors.Is(err, errdefs.ErrConflict) {
			return err
		}
	}
	why := "another host took this sprite over while this daemon was down; this copy is stale and was removed"
	f.log.Warn("stale sprite", "sprite", name, "owner", s.Owner, "head", headGen(s), "ours", c.Generation)
	f.m.Fence(name, why)
	f.setOwned(name, claim{}, false)
	return f.m.Park(name, "", func(sprite.Sprite) bool { return true })
}

func headGen(s cluster.Sprite) uint64 {
	if s.Head == nil {
		return 0
	}
	return s.Head.Generation
}

// Peek returns the record of a sprite at rest that no host has (as its
// head's manifest holds it), without claiming it: what a look at it
// shows. ok is false when a host has it (or nobody does).
func (f *Fleet) Peek(ctx context.Context, name string) (rec sprite.Sprite, generation uint64, ok bool, err error) {
	s, err := f.node.Get(ctx, name)
	if err != nil || s.Owner != "" || s.Head == nil {
		return rec, 0, false, err
	}
	man, err := f.store.Manifest(ctx, name, s.Head.Generation)
	if err != nil {
		return rec, 0, false, err
	}
	if err := json.Unmarshal(man.Meta, &rec); err != nil {
		return rec, 0, false, fmt.Errorf("sprite %q generation %d: bad record in its manifest: %w", name, s.Head.Generation, errdefs.ErrUnavailable)
	}
	rec.Pid, rec.Confinement = 0, nil
	return rec, s.Head.Generation, true, nil
}

// Placement says where a sprite is: the host that owns it ("" at rest)
// and the generation last published (0: never).
func (f *Fleet) Placement(ctx context.Context, name string) (host string, generation uint64) {
	if c, ok := f.claimOf(name); ok {
		return f.ID(), c.Generation
	}
	s, err := f.node.Get(ctx, name)
	if err != nil {
		return "", 0
	}
	return s.Owner, headGen(s)
}

// Hosts lists the cluster's live hosts, with how many sprites each has.
func (f *Fleet) Hosts(ctx context.Context) ([]api.Host, error) {
	hosts, err := f.node.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	all, err := f.node.List(ctx)
	if err != nil {
		return nil, err
	}
	n := map[string]int{}
	for _, s := range all {
		n[s.Owner]++
	}
	out := make([]api.Host, len(hosts))
	for i, h := range hosts {
		out[i] = api.Host{ID: h.ID, API: h.API, CPUClass: h.CPUClass, QEMU: h.QEMU, Runsc: h.Runsc, Accel: h.Accel,
			Version: h.Version, CPUs: h.CPUs, Memory: h.MemoryMiB, Draining: h.Draining, Started: h.Started,
			Sprites: n[h.ID], Self: h.ID == f.ID()}
	}
	return out, nil
}

// Sprites lists the cluster's sprites that are not on this host: those at
// rest from their heads, those on other hosts as those hosts show them.
func (f *Fleet) Sprites(ctx context.Context, caller []byte) ([]api.Sprite, error) {
	all, err := f.node.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []api.Sprite
	elsewhere := map[string]bool{}
	for _, s := range all {
		if _, err := f.m.Get(s.Name); err == nil {
			continue
		}
		switch {
		case s.Owner != "" && s.Owner != f.ID():
			elsewhere[s.Owner] = true
		case s.Head != nil:
			out = append(out, api.Sprite{Name: s.Name, State: s.Head.State, Backend: s.Head.Backend, Generation: s.Head.Generation})
		}
	}
	for id := range elsewhere {
		var theirs []api.Sprite
		if err := f.get(ctx, id, "/v1/sprites", caller, &theirs); err != nil {
			f.log.Warn("list another host's sprites", "host", id, "err", err)
			continue
		}
		out = append(out, theirs...)
	}
	slices.SortFunc(out, func(a, b api.Sprite) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Move sends a sprite to host to: here, it is put to sleep (or, for a
// backend that cannot sleep, stopped), published and released; then host
// to claims and fetches it. A sprite at rest goes straight to to.
func (f *Fleet) Move(ctx context.Context, name, to string, caller []byte) error {
	if to == "" {
		return fmt.Errorf("move %s: name the host to move it to: %w", name, errdefs.ErrInvalid)
	}
	if _, err := f.hostURL(ctx, to); err != nil {
		return errdefs.WithHint(err, "see `wisp hosts`")
	}
	if to == f.ID() {
		return f.bring(ctx, name)
	}
	// A publish under way (a sleep's) ends with the sprite let go: wait
	// for it, so that the far end does not find it still claimed here.
	f.lock(name)()
	if rec, err := f.m.Get(name); err == nil {
		if err := f.rest(ctx, rec); err != nil {
			return err
		}
		if _, err := f.Publish(ctx, name, true); err != nil {
			return err
		}
	}
	return f.call(ctx, to, "/v1/sprites/"+url.PathEscape(name)+"/claim", caller)
}

// rest puts a sprite here to sleep, or stops one whose backend cannot.
func (f *Fleet) rest(ctx context.Context, rec sprite.Sprite) error {
	if rec.State == sprite.Sleeping || rec.State == sprite.Stopped {
		return nil
	}
	_, err := f.m.Sleep(ctx, rec.Name)
	if errors.Is(err, errdefs.ErrUnavailable) {
		_, err = f.m.Stop(ctx, rec.Name)
	}
	return err
}

// Claim makes a published sprite this host's (the far end of a move).
func (f *Fleet) Claim(ctx context.Context, name string) error { return f.bring(ctx, name) }

// Drain marks host id draining (no sprite at rest is placed there) and
// hands every sprite on it to the other live hosts in turn: each is put to
// sleep, published and claimed there. With no other host, they are
// published and left at rest. Another host's drain is sent to it.
func (f *Fleet) Drain(ctx context.Context, id string, caller []byte) (moved []string, err error) {
	if id != f.ID() {
		var res api.DrainResult
		err := f.do(ctx, http.MethodPost, id, "/v1/hosts/"+url.PathEscape(id)+"/drain", caller, &res)
		return res.Moved, err
	}
	hosts, err := f.node.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	var self cluster.Host
	var others []string
	for _, h := range hosts {
		if h.ID == f.ID() {
			self = h
		} else if !h.Draining && h.API != "" {
			others = append(others, h.ID)
		}
	}
	self.Draining = true
	if err := f.node.SetHost(ctx, self); err != nil {
		return nil, err
	}
	var errs []error
	for i, rec := range f.m.List() {
		if len(others) == 0 {
			err := f.rest(ctx, rec)
			if err == nil {
				_, err = f.Publish(ctx, rec.Name, true)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", rec.Name, err))
			}
			continue
		}
		to := others[i%len(others)]
		if err := f.Move(ctx, rec.Name, to, nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", rec.Name, err))
			continue
		}
		moved = append(moved, rec.Name)
	}
	slices.Sort(moved)
	return moved, errors.Join(errs...)
}

// call POSTs to path on host id's API, as a forwarded request.
func (f *Fleet) call(ctx context.Context, id, path string, caller []byte) error {
	return f.do(ctx, http.MethodPost, id, path, caller, nil)
}

// get GETs path on host id's API (only its own sprites: the Local header)
// into out.
func (f *Fleet) get(ctx context.Context, id, path string, caller []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return f.do(ctx, http.MethodGet, id, path, caller, out)
}

func (f *Fleet) do(ctx context.Context, method, id, path string, caller []byte, out any) error {
	base, err := f.hostURL(ctx, id)
	if err != nil {
		return err
	}
	fw, err := f.forwarder(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base.JoinPath(path).String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+fw.secret)
	req.Header.Set(HeaderForwardedBy, fw.id)
	req.Header.Set(HeaderHops, strconv.Itoa(maxHops))
	req.Header.Set(HeaderLocal, "1")
	if caller != nil {
		req.Header.Set(HeaderCaller, string(caller))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("host %s: %v: %w", id, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return remoteError(id, resp)
	}
	if out != nil {
		return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out)
	}
	return nil
}

// remoteError is the API error another host answered, of the same kind.
func remoteError(id string, resp *http.Response) error {
	var body api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &body) != nil || body.Error.Message == "" {
		return fmt.Errorf("host %s answered %s: %w", id, resp.Status, errdefs.ErrUnavailable)
	}
	kind := map[string]error{api.CodeNotFound: errdefs.ErrNotFound, api.CodeExists: errdefs.ErrExists,
		api.CodeInvalid: errdefs.ErrInvalid, api.CodeWrongState: errdefs.ErrState, api.CodeNoSpace: errdefs.ErrNoSpace,
		api.CodeConflict: errdefs.ErrConflict}[body.Error.Code]
	if kind == nil {
		kind = errdefs.ErrUnavailable
	}
	err := fmt.Errorf("host %s: %s: %w", id, body.Error.Message, kind)
	if body.Error.Hint != "" {
		return errdefs.WithHint(err, body.Error.Hint)
	}
	return err
}

// SweepLoop removes, every so often, the objects no sprite's head reaches
// any more (destroyed sprites, older generations), once older than grace.
func (f *Fleet) SweepLoop(ctx context.Context, every, grace time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := f.Sweep(ctx, grace); err != nil {
			f.log.Warn("sweep the object store", "err", err)
		}
	}
}

// Sweep removes the objects no sprite's head reaches, once older than
// grace.
func (f *Fleet) Sweep(ctx context.Context, grace time.Duration) (blob.SweepStats, error) {
	all, err := f.node.List(ctx)
	if err != nil {
		return blob.SweepStats{}, err
	}
	heads := map[string]uint64{}
	for _, s := range all {
		if s.Head != nil {
			heads[s.Name] = s.Head.Generation
		}
	}
	return f.store.Sweep(ctx, func(name string) []uint64 {
		if g, ok := heads[name]; ok {
			return []uint64{g}
		}
		return nil
	}, grace)
}

// Shutdown puts every sprite of this host to rest and publishes it, before
// the daemon leaves the cluster (its lease revoked, its claims gone): a
// sprite that could not be published is fenced, so that none runs on
// unowned.
func (f *Fleet) Shutdown(ctx context.Context) {
	for _, rec := range f.m.List() {
		err := f.rest(ctx, rec)
		if err == nil {
			_, err = f.Publish(ctx, rec.Name, true)
		}
		if err != nil {
			f.log.Error("publish at shutdown failed; fencing the sprite", "sprite", rec.Name, "err", err)
			f.m.Fence(rec.Name, "the daemon left the cluster and could not publish the sprite first: "+err.Error())
		}
	}
}
