package sprite

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/storage"
)

// Secrets are environment variables whose values the daemon keeps out of
// every record, log and answer: they live in secrets.json (mode 0600) in the
// sprite's folder, outside anything the guest sees, and are only ever put
// into the environment of the sprite's execs. A fork starts without them.

// MaxSecretBytes bounds one secret's value.
const MaxSecretBytes = 64 << 10

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidateEnvKey checks an environment variable name.
func ValidateEnvKey(key string) error {
	if !envKeyRE.MatchString(key) || len(key) > 256 {
		return errdefs.WithHint(fmt.Errorf("invalid variable name %q: %w", key, errdefs.ErrInvalid),
			"use letters, digits and '_', not starting with a digit")
	}
	return nil
}

// validateEnv checks one KEY=VALUE (the value is not quoted in errors).
func validateEnv(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("env %q: want KEY=VALUE", k)
	}
	if err := ValidateEnvKey(k); err != nil {
		return err
	}
	if strings.ContainsRune(v, 0) {
		return fmt.Errorf("env %s: the value holds a NUL byte", k)
	}
	return nil
}

func (m *Manager) secretsPath(rec Sprite) string { return filepath.Join(m.dir(rec), "secrets.json") }

func (m *Manager) readSecrets(rec Sprite) (map[string]string, error) {
	b, err := os.ReadFile(m.secretsPath(rec))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	sec := map[string]string{}
	if err := json.Unmarshal(b, &sec); err != nil {
		return nil, fmt.Errorf("sprite %q: secrets file is damaged: %w", rec.Name, err)
	}
	return sec, nil
}

// SetSecret sets secret key of sprite name to value (replacing it).
func (m *Manager) SetSecret(name, key string, value []byte) error {
	if err := ValidateEnvKey(key); err != nil {
		return err
	}
	if len(value) > MaxSecretBytes {
		return fmt.Errorf("secret %s: %d bytes, at most %d: %w", key, len(value), MaxSecretBytes, errdefs.ErrInvalid)
	}
	if slices.Contains(value, 0) {
		return fmt.Errorf("secret %s: the value holds a NUL byte, which no environment can: %w", key, errdefs.ErrInvalid)
	}
	return m.editSecrets(name, func(sec map[string]string) error {
		sec[key] = string(value)
		return nil
	})
}

// RemoveSecret removes secret key of sprite name; ErrNotFound if it has none.
func (m *Manager) RemoveSecret(name, key string) error {
	return m.editSecrets(name, func(sec map[string]string) error {
		if _, ok := sec[key]; !ok {
			return fmt.Errorf("sprite %q has no secret %q: %w", name, key, errdefs.ErrNotFound)
		}
		delete(sec, key)
		return nil
	})
}

// SecretKeys lists the names (never the values) of sprite name's secrets.
func (m *Manager) SecretKeys(name string) ([]string, error) {
	rec, err := m.Get(name)
	if err != nil {
		return nil, err
	}
	sec, err := m.readSecrets(rec)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(sec))
	for k := range sec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

func (m *Manager) editSecrets(name string, fn func(map[string]string) error) error {
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	return m.withOp(e, func() error {
		m.mu.Lock()
		rec := e.rec
		m.mu.Unlock()
		if err := guard(OpEditSecrets, rec); err != nil {
			return err
		}
		sec, err := m.readSecrets(rec)
		if err != nil {
			return err
		}
		if err := fn(sec); err != nil {
			return err
		}
		b, err := json.Marshal(sec)
		if err != nil {
			return err
		}
		return storage.WriteFileAtomic(m.secretsPath(rec), b, 0o600)
	})
}

// ExecEnv returns what every exec in sprite name gets added to its
// environment: the sprite's Env, then its secrets.
func (m *Manager) ExecEnv(name string) ([]string, error) {
	rec, err := m.Record(name) // not Get: its usage figures cost system calls
	if err != nil {
		return nil, err
	}
	sec, err := m.readSecrets(rec)
	if err != nil {
		return nil, err
	}
	env := slices.Clone(rec.Env)
	keys := make([]string, 0, len(sec))
	for k := range sec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+sec[k])
	}
	return env, nil
}

// MergeEnv returns base overridden by over: one entry per key, the last
// one given winning, in first-seen order.
func MergeEnv(base, over []string) []string {
	idx := map[string]int{}
	var out []string
	for _, kv := range append(slices.Clone(base), over...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}
