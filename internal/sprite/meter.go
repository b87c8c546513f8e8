package sprite

import (
	"context"
	"path/filepath"
	"strconv"

	"github.com/wisp-sh/wisp/internal/meter"
	"github.com/wisp-sh/wisp/internal/vmm"
)

var (
	_ meter.Source   = (*Manager)(nil)
	_ meter.Enforcer = (*Manager)(nil)
)

// Readings returns what the host sees of every sprite now, for the meter:
// the CPU time and resident memory of a running one's VMM or sandbox, the
// counters of its link, and with storage its own blocks in the pool (its
// folder's extents less those its image's base disks and templates hold,
// and less a running VM's RAM file, which is memory while it runs).
func (m *Manager) Readings(ctx context.Context, storage bool) []meter.Reading {
	m.mu.Lock()
	type one struct {
		rec  Sprite
		inst vmm.Instance
	}
	all := make([]one, 0, len(m.sprites))
	for _, e := range m.sprites {
		all = append(all, one{e.rec, e.inst})
	}
	m.mu.Unlock()
	var shared []string
	if storage {
		for _, pat := range []string{filepath.Join(m.disksDir(), "*"), filepath.Join(m.templatesDir(), "*", "*")} {
			f, _ := filepath.Glob(pat)
			shared = append(shared, f...)
		}
	}
	out := make([]meter.Reading, 0, len(all))
	for _, s := range all {
		if ctx.Err() != nil {
			break
		}
		rec := s.rec
		r := meter.Reading{ID: rec.ID, Name: rec.Name, State: string(rec.State), Storage: -1}
		if rec.State == Running && s.inst != nil {
			if pid := s.inst.Info().Pid; pid > 0 {
				cpu, mem, epoch, err := meter.Process(pid, vmm.CgroupParent)
				if err == nil {
					r.Running, r.CPU, r.Memory, r.CPUEpoch = true, cpu, mem, epoch
				}
			}
		}
		if m.opt.Net != nil && rec.Address != "" {
			if st, err := m.opt.Net.Stats(rec.ID); err == nil {
				r.NetEpoch, r.NetRx, r.NetTx = strconv.Itoa(st.Link), st.RxBytes, st.TxBytes
			}
		}
		if storage {
			exclude := shared
			if d, err := m.driver(rec); err == nil && r.Running {
				if mf, ok := d.(vmm.MemoryFiler); ok {
					exclude = append(exclude[:len(exclude):len(exclude)], mf.MemoryFile(vmm.Spec{Dir: m.dir(rec)}))
				}
			}
			if n, err := meter.Storage([]string{m.dir(rec)}, exclude); err == nil {
				r.Storage = n
			} else {
				m.log.Warn("storage usage", LogSprite, rec.Name, "err", err)
			}
		}
		out = append(out, r)
	}
	return out
}

// SleepCapped puts a sprite that reached its cap to sleep.
func (m *Manager) SleepCapped(ctx context.Context, name, reason string) error {
	m.log.Info("sleeping at its cap", LogSprite, name, "reason", reason)
	_, err := m.Sleep(ctx, name)
	return err
}
