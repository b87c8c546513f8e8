package sprite

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// A warm snapshot ("template") is a freshly booted sprite of one image,
// backend and size, saved with its agent ready: DataDir/templates/<key>/
// holds disk.img and state/. A create clones both and restores instead of
// booting a kernel, then gives the sprite its own identity. The key names
// the root image file, so a rebuilt image gets a new template.

// identity is what a sprite restored from another's memory (a warm
// snapshot, a fork) is told to make itself its own: names, MAC, address,
// fresh randomness, the time.
func (m *Manager) identity(rec Sprite, seed []byte) proto.Request {
	r := proto.Request{Hostname: rec.Name, MachineID: rec.MachineID, MAC: rec.MAC, Pids: pidsOf(rec), Seed: seed, Time: time.Now()}
	if a, err := netip.ParseAddr(rec.Address); err == nil && m.opt.Net != nil {
		r.Address, r.Gateway = netip.PrefixFrom(a, 30).String(), a.Prev().String()
	}
	return r
}

func (m *Manager) templatesDir() string { return filepath.Join(m.opt.DataDir, "templates") }

func templatePrefix(rec Sprite) string {
	return fmt.Sprintf("%s-%s-%dc-%dm-%dg-", rec.Backend, rec.Image, rec.CPUs, rec.MemoryMiB, rec.DiskGiB)
}

// templateFormat changes when what a warm snapshot holds changes in a way
// its key would not show (3: QEMU under TCG runs -cpu max,-erms,-fsrm), so snapshots
// of the old kind are replaced rather than restored.
const templateFormat = "3"

func templateKey(rec Sprite, root string) string {
	h := sha256.Sum256([]byte(templateFormat + "\x00" + root))
	return templatePrefix(rec) + hex.EncodeToString(h[:4])
}

// fromTemplate starts rec from its warm snapshot, if there is one. ok is
// false when there is none or it failed (the caller boots cold).
func (m *Manager) fromTemplate(ctx context.Context, rec Sprite, root string) (inst vmm.Instance, ok bool) {
	sv, err := m.saver(rec)
	if err != nil {
		return nil, false
	}
	dir := filepath.Join(m.templatesDir(), templateKey(rec, root))
	if _, err := os.Stat(filepath.Join(dir, "state")); err != nil {
		return nil, false
	}
	fail := func(err error) (vmm.Instance, bool) {
		m.log.Warn("warm snapshot failed; booting cold and rebuilding it", LogSprite, rec.Name, LogErr, err)
		kill(inst)
		os.Remove(m.DiskPath(rec))
		os.RemoveAll(dir)
		return nil, false
	}
	if err := checkManifest(dir); err != nil {
		return fail(err)
	}
	if err := m.opt.Clone(filepath.Join(dir, "disk.img"), m.DiskPath(rec)); err != nil {
		return fail(err)
	}
	spec, err := m.spec(ctx, rec)
	if err != nil {
		return fail(err)
	}
	if inst, err = sv.Restore(ctx, spec, filepath.Join(dir, "state")); err != nil {
		return fail(err)
	}
	seed := make([]byte, 64)
	rand.Read(seed)
	if err := inst.Agent().SetIdentity(ctx, m.identity(rec, seed)); err != nil {
		return fail(fmt.Errorf("identity: %w", err))
	}
	return inst, true
}

// buildTemplate boots a throwaway sprite like rec from root and saves it
// as the warm snapshot for its kind, replacing snapshots of older images.
// It runs in the background after a cold create.
func (m *Manager) buildTemplate(rec Sprite, root string) {
	if _, err := m.saver(rec); err != nil {
		return
	}
	key := templateKey(rec, root)
	final := filepath.Join(m.templatesDir(), key)
	if _, err := os.Stat(final); err == nil {
		return
	}
	m.tplMu.Lock()
	if m.tplBuilding[key] {
		m.tplMu.Unlock()
		return
	}
	m.tplBuilding[key] = true
	m.tplMu.Unlock()
	defer func() {
		m.tplMu.Lock()
		delete(m.tplBuilding, key)
		m.tplMu.Unlock()
	}()
	t0 := time.Now()
	if err := m.saveTemplate(rec, root, final); err != nil {
		m.log.Warn("warm snapshot build failed", "key", key, LogErr, err)
		return
	}
	// Snapshots of older builds of this image are stale now.
	ents, _ := os.ReadDir(m.templatesDir())
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), templatePrefix(rec)) && d.Name() != key {
			os.RemoveAll(filepath.Join(m.templatesDir(), d.Name()))
		}
	}
	m.log.Info("warm snapshot ready", "key", key, "took", time.Since(t0).Round(time.Millisecond))
}

func (m *Manager) saveTemplate(rec Sprite, root, final string) error {
	// Cut short when the Manager closes (Close waits for this).
	ctx, cancel := context.WithTimeout(m.closing, m.opt.BootTimeout)
	defer cancel()
	tmp := final + ".tmp-" + randHex(3)
	defer os.RemoveAll(tmp)
	vmDir := filepath.Join(tmp, "vm")
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		return err
	}
	disk := filepath.Join(tmp, "disk.img")
	if err := m.createDisk(ctx, rec.Image, root, disk, rec.DiskGiB); err != nil {
		return err
	}
	tpl := rec
	tpl.ID, tpl.Name, tpl.MAC, tpl.MachineID = "t"+randHex(4), "wisp-template", newMAC(), randHex(16)
	tpl.HostUID = m.opt.UIDs.builderUID() // not the sprite's: it runs beside its VM
	// The throwaway VM has a network like any sprite's (the devices of the
	// saved VM must match those of the sprites restored from it), on an
	// address of its own for as long as it runs. A daemon that dies now
	// leaves it for the next one's Prune.
	if rec.Address != "" {
		if err := m.allocAddress(&tpl); err != nil {
			return err
		}
		defer m.dropNetwork(tpl)
	}
	spec, err := m.spec(ctx, tpl)
	if err != nil {
		return err
	}
	spec.Dir, spec.Disk = vmDir, disk
	defer m.removeLogs(tpl)
	d, err := m.driver(tpl)
	if err != nil {
		return err
	}
	// Recorded before the start: a daemon that dies now leaves a VM that
	// the next one must find and end (cleanTemplates).
	if err := writeJSON(filepath.Join(tmp, tplSpecFile), tplSpec{Backend: tpl.Backend, Spec: spec}); err != nil {
		return err
	}
	inst, err := d.Start(ctx, spec)
	if err != nil {
		return err
	}
	sv := d.(vmm.Saver)
	err = sv.Save(ctx, inst, filepath.Join(tmp, "state"), false, nil)
	kill(inst) // gone already after a good save
	if err != nil {
		return err
	}
	if err := os.RemoveAll(vmDir); err != nil {
		return err
	}
	// Durable before it is published, and checked before each use.
	if err := writeManifest(tmp); err != nil {
		return err
	}
	if err := storage.SyncFiles(tmp, filepath.Join(tmp, "state")); err != nil {
		return err
	}
	return storage.RenameDurable(tmp, final)
}

// manifestFile lists a warm snapshot's files, written last when it is
// built and checked before it is used.
const manifestFile = "manifest.json"

// manifest is each file's size and, for files up to manifestHashMax, its
// SHA-256 (the device state and descriptions; the disk and memory are too
// large to hash at every create).
type manifest map[string]manifestEntry

type manifestEntry struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
}

const manifestHashMax = 16 << 20

// scanManifest describes the regular files below dir (manifestFile and
// the builder's spec.json aside).
func scanManifest(dir string) (manifest, error) {
	mf := manifest{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == manifestFile || rel == tplSpecFile || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := manifestEntry{Size: fi.Size()}
		if fi.Size() <= manifestHashMax {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			e.SHA256 = hex.EncodeToString(h[:])
		}
		mf[filepath.ToSlash(rel)] = e
		return nil
	})
	return mf, err
}

// writeManifest records dir's files in dir/manifest.json.
func writeManifest(dir string) error {
	mf, err := scanManifest(dir)
	if err != nil {
		return err
	}
	b, err := json.Marshal(mf)
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(filepath.Join(dir, manifestFile), b, 0o600)
}

// checkManifest fails unless dir holds exactly the files its manifest
// lists, of their sizes and contents.
func checkManifest(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return fmt.Errorf("warm snapshot %s: %w", dir, err)
	}
	var want manifest
	if err := json.Unmarshal(b, &want); err != nil {
		return fmt.Errorf("warm snapshot %s: manifest: %w", dir, err)
	}
	got, err := scanManifest(dir)
	if err != nil {
		return fmt.Errorf("warm snapshot %s: %w", dir, err)
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			return fmt.Errorf("warm snapshot %s: %s is %+v, its manifest says %+v", dir, name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			return fmt.Errorf("warm snapshot %s: %s is not in its manifest", dir, name)
		}
	}
	return nil
}

// WarmSnapshots lists the warm snapshots ready for use, by key
// (backend-image-CPUs-memory-disk-imagehash).
func (m *Manager) WarmSnapshots() []string {
	ents, _ := os.ReadDir(m.templatesDir())
	var out []string
	for _, d := range ents {
		if !strings.Contains(d.Name(), ".tmp-") {
			out = append(out, d.Name())
		}
	}
	return out
}

// tplSpecFile records, in a warm snapshot being built, the throwaway
// instance's backend and spec.
const tplSpecFile = "spec.json"

type tplSpec struct {
	Backend string   `json:"backend"`
	Spec    vmm.Spec `json:"spec"`
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(path, b, 0o600)
}

// cleanTemplates removes warm snapshots that were being built when the
// daemon died, ending the throwaway VMs they were built from.
func (m *Manager) cleanTemplates(ctx context.Context) {
	tmps, _ := filepath.Glob(filepath.Join(m.templatesDir(), "*.tmp-*"))
	for _, t := range tmps {
		var ts tplSpec
		if b, err := os.ReadFile(filepath.Join(t, tplSpecFile)); err == nil && json.Unmarshal(b, &ts) == nil {
			if d, ok := m.opt.Drivers[ts.Backend]; ok {
				// Its VM may still be booting: end it without waiting for
				// its agent.
				if err := d.Reap(ctx, ts.Spec); err != nil {
					m.log.Warn("could not end the VM of a half-built warm snapshot", "dir", t, LogErr, err)
				}
			}
		}
		os.RemoveAll(t)
	}
}
