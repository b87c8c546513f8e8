package gvisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wisp-sh/wisp/internal/storage"
	"github.com/wisp-sh/wisp/internal/vmm"
)

// agentFile is the sprite's own copy of the agent binary (in its folder,
// and in each saved state), which its sandbox runs. gVisor refuses to
// restore a sandbox whose mounted files changed, and the agent's binary
// is one (it runs from it): with the daemon's binary mounted, a new build
// of the agent made every sleeping sprite's wake fail. So a sprite runs
// the copy made at its cold boot; a save links that very file into the
// state, and a restore mounts it again. A new build of the agent reaches a
// sprite at its next cold boot.
const agentFile = "wisp-agent"

// agentFor returns the agent binary the sandbox of spec mounts: for a
// boot (image ""), the daemon's current build (a link to the build's copy
// in AgentCache, or a copy of its own); for a restore, the file the state
// was saved with.
func (d *Driver) agentFor(spec vmm.Spec, image string) (string, error) {
	own := filepath.Join(spec.Dir, agentFile)
	if image != "" {
		saved := filepath.Join(image, agentFile)
		if _, err := os.Stat(saved); err != nil {
			return spec.Agent, nil // a state saved before sprites had their own copy
		}
		if err := linkOver(saved, own); err != nil {
			return "", fmt.Errorf("the agent the state was saved with: %w", err)
		}
		return own, nil
	}
	if build, err := d.agentBuild(spec.Agent); err == nil && linkOver(build, own) == nil {
		return own, nil
	}
	if err := copyOver(spec.Agent, own); err != nil {
		return "", fmt.Errorf("copy the agent: %w", err)
	}
	return own, nil
}

// agentBuild returns the copy of the agent binary at path in AgentCache
// (a folder on the sprites' file system, so that a boot links it instead
// of copying 4 MB), made by the first boot of each build. Copies of older
// builds are removed: the sprites that run them hold their own links.
func (d *Driver) agentBuild(path string) (string, error) {
	if d.AgentCache == "" {
		return "", errors.New("no agent cache")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	d.agentMu.Lock()
	defer d.agentMu.Unlock()
	name := fmt.Sprintf("%s-%d-%d", agentFile, fi.Size(), fi.ModTime().UnixNano())
	return storage.Current(d.AgentCache, name, agentFile+"-*", func(dst string) error { return copyOver(path, dst) })
}

// copyOver copies src to dst (read-only, executable), replacing dst.
func copyOver(src, dst string) error {
	tmp := dst + ".tmp"
	os.Remove(tmp)
	err := storage.CopyFile(src, tmp)
	if err == nil {
		err = os.Chmod(tmp, 0o555)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// saveAgent links the agent file the sandbox of spec runs into the state
// folder dir (nothing for a sandbox booted before sprites had their own).
func saveAgent(spec vmm.Spec, dir string) error {
	own := filepath.Join(spec.Dir, agentFile)
	if _, err := os.Stat(own); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return linkOver(own, filepath.Join(dir, agentFile))
}

// linkOver makes dst the same file as src (a hard link: same inode, size
// and times, which is what a restore checks), replacing dst.
func linkOver(src, dst string) error {
	tmp := dst + ".tmp"
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
