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
// boot (image ""), a fresh copy of spec.Agent; for a restore, the file
// the state was saved with.
func agentFor(spec vmm.Spec, image string) (string, error) {
	own := filepath.Join(spec.Dir, agentFile)
	if image == "" {
		tmp := own + ".tmp"
		os.Remove(tmp)
		if err := storage.CopyFile(spec.Agent, tmp); err != nil {
			return "", fmt.Errorf("copy the agent: %w", err)
		}
		if err := errors.Join(os.Chmod(tmp, 0o555), os.Rename(tmp, own)); err != nil {
			os.Remove(tmp)
			return "", fmt.Errorf("copy the agent: %w", err)
		}
		return own, nil
	}
	saved := filepath.Join(image, agentFile)
	if _, err := os.Stat(saved); err != nil {
		// A state saved before sprites had their own copy.
		return spec.Agent, nil
	}
	if err := linkOver(saved, own); err != nil {
		return "", fmt.Errorf("the agent the state was saved with: %w", err)
	}
	return own, nil
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
