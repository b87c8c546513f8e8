package sprite

import (
	"context"
	"fmt"
)

// SaveDisk writes a clone of sprite name's disk as it is now to dst (a
// reflink in the pool): a running sprite's filesystem is frozen for the
// moment the clone takes, as for a checkpoint. It returns the sprite.
func (m *Manager) SaveDisk(ctx context.Context, name, dst string) (Sprite, error) {
	e, err := m.lookup(name)
	if err != nil {
		return Sprite{}, err
	}
	var rec Sprite
	err = m.withOp(e, func() error {
		m.mu.Lock()
		rec = e.rec
		m.mu.Unlock()
		if err := guard(OpSaveDisk, rec); err != nil {
			return err
		}
		return m.cloneCurrent(ctx, e, dst)
	})
	if err != nil {
		return Sprite{}, fmt.Errorf("save the disk of sprite %q: %w", name, noSpace(err))
	}
	return rec, nil
}
