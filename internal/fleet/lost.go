package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/storage"
)

// lostCopy is a sprite this host stopped when it lost its lease, kept
// aside (lost/<name>, with lost/<name>.json) until the host is back in
// the cluster: its record and the claim it had.
type lostCopy struct {
	Sprite sprite.Sprite `json:"sprite"`
	Claim  claim         `json:"claim"`
}

func (f *Fleet) lostDir(name string) string { return filepath.Join(f.cfg.DataDir, "lost", name) }
func (f *Fleet) lostMeta(name string) string {
	return filepath.Join(f.cfg.DataDir, "lost", name+".json")
}

// Lost fences this host: its lease keep-alive failed, so other hosts may
// soon claim its sprites. Their VMs end here first, and they leave the
// Manager (nothing here may start them), their files kept aside. Once
// this host is registered again, a sprite no other host took over
// meanwhile comes back, stopped (or asleep), with its changes since its
// last publish; one another host took over goes (the cluster's recovery
// point for it is its last publish).
func (f *Fleet) Lost() {
	f.mu.Lock()
	names := make([]string, 0, len(f.owned))
	for n := range f.owned {
		names = append(names, n)
	}
	f.mu.Unlock()
	why := "this host lost its cluster lease (etcd unreachable): the sprite was stopped, and kept here unless another host took it over from its last publish meanwhile"
	for _, name := range names {
		if err := f.m.Fence(name, why); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			f.log.Error("fence", "sprite", name, "err", err)
		}
	}
	f.log.Error("cluster lease lost: this host's sprites were stopped", "sprites", len(names))
	always := func(sprite.Sprite) bool { return true }
	for _, name := range names {
		c, _ := f.claimOf(name)
		if rec, err := f.m.Get(name); err == nil {
			b, _ := json.Marshal(lostCopy{Sprite: rec, Claim: c})
			err := os.MkdirAll(filepath.Dir(f.lostMeta(name)), 0o700)
			if err == nil {
				err = storage.WriteFileAtomic(f.lostMeta(name), b, 0o600)
			}
			if err == nil {
				err = f.m.Park(name, f.lostDir(name), always)
			}
			if err != nil {
				f.log.Error("keep a fenced sprite aside; removing it", "sprite", name, "err", err)
				os.Remove(f.lostMeta(name))
				f.m.Park(name, "", always)
			}
		}
		f.setOwned(name, claim{}, false)
	}
	go func() {
		for !f.node.Live() {
			time.Sleep(200 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		f.restoreLost(ctx)
	}()
}

// restoreLost brings back the sprites kept aside by Lost that no other
// host took over, and publishes them.
func (f *Fleet) restoreLost(ctx context.Context) {
	metas, _ := filepath.Glob(filepath.Join(f.cfg.DataDir, "lost", "*.json"))
	for _, m := range metas {
		name := strings.TrimSuffix(filepath.Base(m), ".json")
		if f.restore(ctx, name) {
			f.AtRest(ctx, name)
		}
	}
}

// restore brings back one sprite kept aside by Lost, if no other host
// took it over: it is claimed again (created again, if never published)
// and adopted.
func (f *Fleet) restore(ctx context.Context, name string) bool {
	defer f.lock(name)()
	var lc lostCopy
	b, err := os.ReadFile(f.lostMeta(name))
	drop := func(why string) bool {
		f.log.Warn("sprite stopped at a lost lease is not kept", "sprite", name, "why", why)
		os.RemoveAll(f.lostDir(name))
		os.Remove(f.lostMeta(name))
		return false
	}
	if err != nil || json.Unmarshal(b, &lc) != nil || lc.Sprite.Name != name || !exists(f.lostDir(name)) {
		return drop("its copy is incomplete")
	}
	if _, err := f.m.Get(name); err == nil {
		return drop("this host has it again")
	}
	s, err := f.node.Get(ctx, name)
	var fence cluster.Fence
	switch {
	case errors.Is(err, errdefs.ErrNotFound) && lc.Claim.Generation == 0:
		fence, err = f.node.Create(ctx, name)
	case errors.Is(err, errdefs.ErrNotFound):
		return drop("it was destroyed elsewhere")
	case err != nil:
		f.log.Warn("sprite stopped at a lost lease: cannot read the cluster; trying at the next start", "sprite", name, "err", err)
		return false
	case s.Owner == "" && headGen(s) == lc.Claim.Generation:
		fence, err = f.node.Claim(ctx, name)
	default:
		return drop("another host took it over")
	}
	if errors.Is(err, errdefs.ErrConflict) {
		return drop("another host took it over")
	}
	if err != nil {
		f.log.Warn("sprite stopped at a lost lease: cannot claim it; trying at the next start", "sprite", name, "err", err)
		return false
	}
	c := claim{Fence: fence, Generation: lc.Claim.Generation}
	undo := func() {
		f.setOwned(name, claim{}, false)
		if c.Generation == 0 {
			f.node.Delete(context.WithoutCancel(ctx), name, fence)
		} else {
			f.node.Release(context.WithoutCancel(ctx), name, fence)
		}
	}
	if err := f.setOwned(name, c, true); err != nil {
		undo()
		return false
	}
	if _, err := f.m.Adopt(ctx, lc.Sprite, f.lostDir(name)); err != nil {
		undo()
		return drop("adopt: " + err.Error())
	}
	os.Remove(f.lostMeta(name))
	f.log.Info("sprite stopped at a lost lease is kept: no other host took it over", "sprite", name, "generation", c.Generation)
	return true
}
