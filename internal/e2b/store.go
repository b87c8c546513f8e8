package e2b

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/wisp-sh/wisp/internal/storage"
)

// Sandbox is what E2B's API knows of a sandbox beyond the sprite that is
// it: the sprite is named by the sandbox's ID.
type Sandbox struct {
	ID         string            `json:"id"`
	TemplateID string            `json:"template_id"` // as the client named it ("base")
	Image      string            `json:"image"`       // the wisp image it maps to ("dev")
	ClientID   string            `json:"client_id"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// AccessToken is the envd access token: the envd requests of the
	// sandbox carry it, and signed file URLs are keyed by it.
	AccessToken string    `json:"access_token"`
	StartedAt   time.Time `json:"started_at"`
	// EndAt is the timeout: then the sandbox is killed, or with
	// AutoPause paused.
	EndAt     time.Time `json:"end_at"`
	AutoPause bool      `json:"auto_pause,omitempty"`
	// Paused: paused through the API (pause, or a timeout with
	// AutoPause); connect resumes it.
	Paused bool `json:"paused,omitempty"`
	// AutoResume: an envd request to the paused sandbox resumes it.
	AutoResume bool `json:"auto_resume,omitempty"`
	// User is the template's default user: processes and files of a
	// request that names none are this user's.
	User string `json:"user"`
}

// store keeps the sandboxes in one JSON file, rewritten atomically on
// every change (a few hundred records at most: cheap).
type store struct {
	path string

	mu  sync.Mutex
	sbx map[string]Sandbox
}

func openStore(path string) (*store, error) {
	s := &store{path: path, sbx: map[string]Sandbox{}}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var list []Sandbox
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	for _, sb := range list {
		s.sbx[sb.ID] = sb
	}
	return s, nil
}

// saveLocked writes the file; s.mu is held.
func (s *store) saveLocked() error {
	list := slices.SortedFunc(maps.Values(s.sbx), func(a, b Sandbox) int {
		return a.StartedAt.Compare(b.StartedAt)
	})
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(s.path, b, 0o600)
}

func (s *store) get(id string) (Sandbox, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sbx[id]
	return sb, ok
}

func (s *store) put(sb Sandbox) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.sbx[sb.ID]
	s.sbx[sb.ID] = sb
	if err := s.saveLocked(); err != nil {
		if had {
			s.sbx[sb.ID] = old
		} else {
			delete(s.sbx, sb.ID)
		}
		return err
	}
	return nil
}

// update changes the sandbox id under the store's lock; fn returns false
// to leave it unchanged.
func (s *store) update(id string, fn func(*Sandbox) bool) (Sandbox, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sbx[id]
	if !ok {
		return Sandbox{}, false, nil
	}
	old := sb
	if !fn(&sb) {
		return sb, true, nil
	}
	s.sbx[id] = sb
	if err := s.saveLocked(); err != nil {
		s.sbx[id] = old
		return old, true, err
	}
	return sb, true, nil
}

func (s *store) remove(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sbx[id]; !ok {
		return nil
	}
	delete(s.sbx, id)
	return s.saveLocked()
}

// list returns the sandboxes oldest first.
func (s *store) list() []Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.SortedFunc(maps.Values(s.sbx), func(a, b Sandbox) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return compareStr(a.ID, b.ID)
	})
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
