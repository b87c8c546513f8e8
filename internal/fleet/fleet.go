// Package fleet spreads sprites over several hosts (cluster mode): it
// publishes a sprite at rest to the object store and its head to etcd,
// claims and fetches a sprite that another host published before serving
// it here, sends requests for a sprite another host holds to that host,
// and fences this host's sprites when it loses its lease.
//
// A host owns a sprite while it holds it live (running, or changed and not
// published yet). A sprite at rest is published and owned by no host; its
// last host keeps a warm copy of its files, so waking it there again costs
// a claim and a rename, and anywhere else a fetch of the chunks that host
// lacks.
//
// A test knob: WISP_FAILPOINT, read once by New, makes the daemon kill
// itself (SIGKILL, no cleanup) at one point of a publish, as a crash
// there would: "publish-after-chunks" (the chunks are in the store, the
// manifest is not) or "publish-after-manifest" (the manifest is, the
// head in etcd is not). Unset, nothing changes.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/blob"
	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/storage"
)

// Config is what a Fleet needs besides its parts.
type Config struct {
	// DataDir holds the fleet's files: owned.json (this host's claims),
	// parked/ (warm copies), incoming/ and outgoing/ (transfers).
	DataDir string
	// Compat are the facts a sleeping sprite's memory needs of a host to
	// be restored there, by backend ("qemu": CPU class, QEMU version,
	// accelerator; "gvisor": CPU class, runsc version). A host whose facts
	// differ wakes the sprite's disk cold.
	Compat map[string]map[string]string
	Log    *slog.Logger
}

// Fleet is this host's part of a cluster.
type Fleet struct {
	cfg   Config
	log   *slog.Logger
	m     *sprite.Manager
	node  *cluster.Node
	store *blob.Store

	failpoint string // WISP_FAILPOINT (see the package doc)

	mu     sync.Mutex
	owned  map[string]claim       // sprites this host owns, by name
	locks  map[string]*sync.Mutex // one claim, publish or move at a time per sprite
	client *forwarder
}

// claim is a sprite this host owns: the fence of its claim and the
// generation its copy here grew from (0: never published).
type claim struct {
	Fence      cluster.Fence `json:"fence"`
	Generation uint64        `json:"generation"`
}

// New returns the Fleet of m on node and store. Start it after m's
// Recover, before serving.
func New(cfg Config, m *sprite.Manager, node *cluster.Node, store *blob.Store) (*Fleet, error) {
	f := &Fleet{cfg: cfg, log: cfg.Log, m: m, node: node, store: store, owned: map[string]claim{}, locks: map[string]*sync.Mutex{}}
	if f.log == nil {
		f.log = slog.Default()
	}
	switch f.failpoint = os.Getenv("WISP_FAILPOINT"); f.failpoint {
	case "":
	case failAfterChunks:
		store.BeforeManifest = func() { f.fail(failAfterChunks) }
	case failAfterManifest:
	default:
		return nil, fmt.Errorf("WISP_FAILPOINT=%q: want %s or %s", f.failpoint, failAfterChunks, failAfterManifest)
	}
	b, err := os.ReadFile(f.ownedPath())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &f.owned); err != nil {
			return nil, fmt.Errorf("read %s: %w", f.ownedPath(), err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	for _, d := range []string{"parked", "incoming", "outgoing"} {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, d), 0o700); err != nil {
			return nil, err
		}
	}
	// Transfers a crash cut short.
	for _, d := range []string{"incoming", "outgoing"} {
		old, _ := filepath.Glob(filepath.Join(cfg.DataDir, d, "*"))
		for _, o := range old {
			os.RemoveAll(o)
		}
	}
	return f, nil
}

// Failpoints (WISP_FAILPOINT).
const (
	failAfterChunks   = "publish-after-chunks"
	failAfterManifest = "publish-after-manifest"
)

// fail kills this process at failpoint point, as a crash there would.
func (f *Fleet) fail(point string) {
	f.log.Error("failpoint: killing the daemon", "failpoint", point)
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		p.Kill()
	}
	select {}
}

func (f *Fleet) ownedPath() string            { return filepath.Join(f.cfg.DataDir, "owned.json") }
func (f *Fleet) parkedDir(name string) string { return filepath.Join(f.cfg.DataDir, "parked", name) }
func (f *Fleet) parkedMeta(name string) string {
	return filepath.Join(f.cfg.DataDir, "parked", name+".json")
}

// ID is this host's id.
func (f *Fleet) ID() string { return f.node.ID() }

// lock serialises the claims, publishes and moves of one sprite here.
func (f *Fleet) lock(name string) func() {
	f.mu.Lock()
	l, ok := f.locks[name]
	if !ok {
		l = &sync.Mutex{}
		f.locks[name] = l
	}
	f.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// setOwned records (ok) or forgets this host's claim on name, durably,
// before the claim is acted on.
func (f *Fleet) setOwned(name string, c claim, ok bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ok {
		f.owned[name] = c
	} else {
		delete(f.owned, name)
	}
	b, err := json.Marshal(f.owned)
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(f.ownedPath(), b, 0o600)
}

func (f *Fleet) claimOf(name string) (claim, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.owned[name]
	return c, ok
}

// Reserve takes name across the cluster before a create or fork here
// (sprite.Placement).
func (f *Fleet) Reserve(ctx context.Context, name string) (func(), error) {
	fence, err := f.node.Create(ctx, name)
	if err != nil {
		return nil, errdefs.WithHint(err, "sprite names are unique across the cluster: choose another")
	}
	if err := f.setOwned(name, claim{Fence: fence}, true); err != nil {
		f.node.Delete(context.WithoutCancel(ctx), name, fence)
		return nil, err
	}
	return func() {
		if err := f.node.Delete(context.Background(), name, fence); err != nil {
			f.log.Warn("release reserved name", "sprite", name, "err", err)
		}
		f.setOwned(name, claim{}, false)
	}, nil
}

// Removed forgets a sprite destroyed here (sprite.Placement): its head
// and claim go; the sweep removes its chunks.
func (f *Fleet) Removed(ctx context.Context, rec sprite.Sprite) {
	c, ok := f.claimOf(rec.Name)
	if !ok {
		return
	}
	if err := f.node.Delete(ctx, rec.Name, c.Fence); err != nil {
		f.log.Warn("remove destroyed sprite from the cluster", "sprite", rec.Name, "err", err)
	}
	f.setOwned(rec.Name, claim{}, false)
	os.RemoveAll(f.parkedDir(rec.Name))
	os.Remove(f.parkedMeta(rec.Name))
}

// AtRest publishes a sprite that went to sleep or stopped and hands it to
// the cluster (sprite.Placement).
func (f *Fleet) AtRest(ctx context.Context, name string) {
	if _, err := f.Publish(ctx, name, true); err != nil && !errors.Is(err, errdefs.ErrConflict) {
		f.log.Warn("publish", "sprite", name, "err", err)
	}
}

// parked is the warm copy of a sprite this host last published.
type parked struct {
	Generation uint64 `json:"generation"`
}

// Publish sends the state of a sprite at rest here to the object store as
// its next generation and makes that its head. With release, the sprite
// then leaves this host (its files stay as a warm copy) and no host owns
// it, unless it was woken meanwhile: then it stays, owned.
func (f *Fleet) Publish(ctx context.Context, name string, release bool) (blob.Stats, error) {
	defer f.lock(name)()
	c, ok := f.claimOf(name)
	if !ok {
		if _, err := f.m.Get(name); err != nil {
			return blob.Stats{}, nil // published and let go meanwhile
		}
		return blob.Stats{}, fmt.Errorf("sprite %q is not this host's: %w", name, errdefs.ErrConflict)
	}
	out, err := os.MkdirTemp(filepath.Join(f.cfg.DataDir, "outgoing"), name+"-")
	if err != nil {
		return blob.Stats{}, err
	}
	defer os.RemoveAll(out)
	rec, files, err := f.m.CopyRest(name, out)
	if err != nil {
		return blob.Stats{}, err
	}
	var prev *blob.Manifest
	if c.Generation > 0 {
		if pm, err := f.store.Manifest(ctx, name, c.Generation); err == nil {
			prev = &pm
		}
	}
	meta, err := json.Marshal(rec)
	if err != nil {
		return blob.Stats{}, err
	}
	bf := make([]blob.File, len(files))
	for i, fl := range files {
		bf[i] = blob.File{Name: fl.Name, Path: fl.Path}
	}
	// The next generation: past the head, and past any manifest a publish
	// cut short after its manifest (a crash before its etcd transaction)
	// left behind until the sweep.
	gen := c.Generation + 1
	gens, err := f.store.Generations(ctx, name)
	if err != nil {
		return blob.Stats{}, fmt.Errorf("publish sprite %q: %w", name, err)
	}
	if len(gens) > 0 {
		gen = max(gen, gens[len(gens)-1]+1)
	}
	man, st, err := f.store.Publish(ctx, name, gen, f.ID(), bf, meta, prev)
	if err != nil {
		return st, fmt.Errorf("publish sprite %q generation %d: %w", name, gen, err)
	}
	if f.failpoint == failAfterManifest {
		f.fail(failAfterManifest)
	}
	head := cluster.Head{Generation: gen, Manifest: blob.ManifestKey(name, gen), Host: f.ID(), Backend: rec.Backend,
		State: string(rec.State), Compat: f.cfg.Compat[rec.Backend], Time: man.Created}
	if err := f.setHead(ctx, name, c.Fence, head); err != nil {
		return st, fmt.Errorf("publish sprite %q: %w", name, err)
	}
	c.Generation = gen
	if err := f.setOwned(name, c, true); err != nil {
		return st, err
	}
	f.log.Info("sprite published", "sprite", name, "generation", gen, "state", rec.State,
		"bytes_uploaded", st.BytesUploaded, "chunks_uploaded", st.ChunksUploaded, "took", st.Took.Round(time.Millisecond))
	if !release {
		return st, nil
	}
	unchanged := func(now sprite.Sprite) bool {
		return now.State == rec.State && now.SleptAt.Equal(rec.SleptAt) && now.StartedAt.Equal(rec.StartedAt)
	}
	os.Remove(f.parkedMeta(name))
	if err := f.m.Park(name, f.parkedDir(name), unchanged); err != nil {
		return st, err // woken meanwhile: it stays here, owned
	}
	b, _ := json.Marshal(parked{Generation: gen})
	if err := storage.WriteFileAtomic(f.parkedMeta(name), b, 0o600); err != nil {
		f.log.Warn("record warm copy", "sprite", name, "err", err)
	}
	if err := f.node.Release(ctx, name, c.Fence); err != nil {
		// Still ours in etcd: the next use here adopts the warm copy.
		f.log.Warn("release sprite", "sprite", name, "err", err)
		return st, nil
	}
	return st, f.setOwned(name, claim{}, false)
}

// setHead records head as name's under fence, trying again while etcd
// does not answer (a leader election takes seconds) and this host's lease
// holds: writing the same head again under the same fence is harmless.
func (f *Fleet) setHead(ctx context.Context, name string, fence cluster.Fence, head cluster.Head) error {
	wait := time.Second
	for {
		err := f.node.SetHead(ctx, name, fence, head)
		if err == nil || !errors.Is(err, errdefs.ErrUnavailable) || !f.node.Live() || wait > 16*time.Second {
			return err
		}
		f.log.Warn("publish: etcd did not answer; trying again", "sprite", name, "generation", head.Generation, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// bring makes a published sprite this host's: it claims it, then adopts
// its warm copy when that is of the head's generation, else fetches the
// head's files (the chunks this host lacks). A host whose facts differ
// from those the sprite's memory needs takes its disk only, to boot cold.
func (f *Fleet) bring(ctx context.Context, name string) error {
	defer f.lock(name)()
	if _, err := f.m.Get(name); err == nil {
		return nil // here already
	}
	s, err := f.node.Get(ctx, name)
	if err != nil {
		return err
	}
	c, mine := f.claimOf(name)
	if s.Owner != f.ID() || !mine || c.Fence != s.Fence {
		fence, err := f.node.Claim(ctx, name)
		if err != nil {
			return err
		}
		c = claim{Fence: fence}
	}
	if s.Head == nil {
		f.node.Release(context.WithoutCancel(ctx), name, c.Fence)
		return fmt.Errorf("sprite %q was never published: %w", name, errdefs.ErrNotFound)
	}
	c.Generation = s.Head.Generation
	if err := f.setOwned(name, c, true); err != nil {
		return err
	}
	if err := f.adopt(ctx, name, *s.Head); err != nil {
		f.setOwned(name, claim{}, false)
		if rerr := f.node.Release(context.WithoutCancel(ctx), name, c.Fence); rerr != nil {
			f.log.Warn("release after a failed fetch", "sprite", name, "err", rerr)
		}
		return err
	}
	return nil
}

// adopt brings the files of head here and hands them to the Manager.
func (f *Fleet) adopt(ctx context.Context, name string, head cluster.Head) error {
	t0 := time.Now()
	man, err := f.store.Manifest(ctx, name, head.Generation)
	if err != nil {
		return err
	}
	var rec sprite.Sprite
	if err := json.Unmarshal(man.Meta, &rec); err != nil || rec.Name != name {
		return fmt.Errorf("sprite %q generation %d: bad record in its manifest: %w", name, head.Generation, errdefs.ErrUnavailable)
	}
	cold := ""
	if rec.State == sprite.Sleeping {
		cold = f.incompatible(rec.Backend, head.Compat)
	}
	var p parked
	if b, err := os.ReadFile(f.parkedMeta(name)); err == nil && json.Unmarshal(b, &p) == nil && p.Generation == head.Generation && cold == "" {
		os.Remove(f.parkedMeta(name))
		if _, err := f.m.Adopt(ctx, rec, f.parkedDir(name)); err == nil {
			f.log.Info("sprite taken back from its warm copy", "sprite", name, "generation", head.Generation, "took", time.Since(t0).Round(time.Millisecond))
			return nil
		} else {
			f.log.Warn("warm copy refused; fetching", "sprite", name, "err", err)
		}
	}
	in, err := os.MkdirTemp(filepath.Join(f.cfg.DataDir, "incoming"), name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(in)
	if cold != "" {
		// Only the disk (and secrets) can come: the memory cannot run here.
		keep := man.Files[:0:0]
		for _, fl := range man.Files {
			if fl.Name == "disk.img" || fl.Name == "secrets.json" {
				keep = append(keep, fl)
			}
		}
		man.Files = keep
		rec.State, rec.SleptAt = sprite.Stopped, time.Time{}
		rec.LastError = "moved to host " + f.ID() + " without its memory (" + cold + "): its disk boots cold"
		f.log.Warn("sprite's memory cannot run on this host; taking its disk only", "sprite", name, "why", cold)
	}
	bases := map[string]string{}
	if old := f.parkedDir(name); exists(old) {
		for _, fl := range man.Files {
			if p := filepath.Join(old, filepath.FromSlash(fl.Name)); exists(p) {
				bases[fl.Name] = p
			}
		}
	}
	if _, ok := bases["disk.img"]; !ok && rec.Image != "" {
		if b, err := f.m.BaseDisk(ctx, rec.Image, rec.DiskGiB); err == nil {
			bases["disk.img"] = b
		}
	}
	st, err := f.store.Hydrate(ctx, man, in, bases)
	if err != nil {
		return fmt.Errorf("fetch sprite %q generation %d: %w", name, head.Generation, err)
	}
	os.RemoveAll(f.parkedDir(name))
	os.Remove(f.parkedMeta(name))
	if _, err := f.m.Adopt(ctx, rec, in); err != nil {
		return err
	}
	f.log.Info("sprite fetched", "sprite", name, "generation", head.Generation, "from", head.Host,
		"chunks", st.Chunks, "reused", st.ChunksReused, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// incompatible says why a sleeping sprite's memory saved on a host with
// facts want cannot be restored here ("" when it can).
func (f *Fleet) incompatible(backend string, want map[string]string) string {
	have := f.cfg.Compat[backend]
	for k, v := range want {
		if have[k] != v {
			return fmt.Sprintf("its memory needs %s %q, this host has %q", k, v, have[k])
		}
	}
	return ""
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
