package sprite

import (
	"fmt"
	"os/user"
	"strconv"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// UIDRange is the block of host uids whose users wisp's VMMs run as: the
// first is the warm snapshot builder's, and each sprite has one of the
// others for its life (recorded, so a restarted daemon and every start,
// wake and restore use the same). Count 0: sprites have none (their VMM
// runs as the driver's default user).
type UIDRange struct {
	First, Count int
}

// builderUID is the uid of warm snapshot builds (throwaway VMs).
func (r UIDRange) builderUID() int {
	if r.Count == 0 {
		return 0
	}
	return r.First
}

// allocUID gives rec, when its backend runs its VMM as a user of the
// sprite's own, a host uid of its own: the lowest of the range that
// no sprite holds and that names no user of the host. It is held as
// pending until the record is in m.sprites; the caller calls done then,
// or when the record was not made.
func (m *Manager) allocUID(rec *Sprite) (done func(), err error) {
	r := m.opt.UIDs
	rec.HostUID = 0
	if u, ok := m.opt.Drivers[rec.Backend].(vmm.UIDUser); r.Count == 0 || !ok || !u.UsesUID() {
		return func() {}, nil // its backend runs no VMM as a user of the sprite's
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	used := map[int]bool{}
	for _, e := range m.sprites {
		used[e.rec.HostUID] = true
	}
	for uid := range m.pendingUIDs {
		used[uid] = true
	}
	for uid := r.First + 1; uid < r.First+r.Count; uid++ {
		if used[uid] {
			continue
		}
		if _, err := user.LookupId(strconv.Itoa(uid)); err == nil {
			continue // a user of the host
		}
		rec.HostUID = uid
		m.pendingUIDs[uid] = true
		return func() {
			m.mu.Lock()
			delete(m.pendingUIDs, uid)
			m.mu.Unlock()
		}, nil
	}
	return nil, errdefs.WithHint(fmt.Errorf("no free host uid for sprite %q in %d-%d: %w", rec.Name, r.First+1, r.First+r.Count-1, errdefs.ErrUnavailable),
		"destroy sprites, or give wispd a wider --vmm-uids range")
}
