package sprite

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/vmm/vmmtest"
)

func TestEnvAndSecrets(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, dir, &vmmtest.Driver{})
	defer m.Close()
	ctx := context.Background()
	for _, env := range [][]string{{"NOEQ"}, {"1X=y"}, {"A-B=c"}, {"X=a\x00b"}} {
		if _, err := m.Create(ctx, CreateOptions{Name: "bad", Env: env}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Create with env %q = %v, want ErrInvalid", env, err)
		}
	}
	if _, err := m.Create(ctx, CreateOptions{Name: "a", Env: []string{"FOO=1", "BAR=x=y"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key   string
		value string
		kind  error
	}{
		{"1BAD", "v", errdefs.ErrInvalid},
		{"", "v", errdefs.ErrInvalid},
		{"K", "a\x00b", errdefs.ErrInvalid},
		{"K", strings.Repeat("x", MaxSecretBytes+1), errdefs.ErrInvalid},
	} {
		if err := m.SetSecret("a", tc.key, []byte(tc.value)); !errors.Is(err, tc.kind) {
			t.Errorf("SetSecret(%q) = %v, want %v", tc.key, err, tc.kind)
		}
	}
	if err := m.SetSecret("ghost", "K", []byte("v")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("SetSecret on a missing sprite = %v", err)
	}
	if keys, err := m.SecretKeys("a"); err != nil || len(keys) != 0 {
		t.Fatalf("bad input left secrets: %v %v", keys, err)
	}
	if err := m.SetSecret("a", "TOKEN", []byte("s3cret")); err != nil {
		t.Fatal(err)
	}
	if err := m.SetSecret("a", "FOO", []byte("from-secret")); err != nil {
		t.Fatal(err)
	}
	env, err := m.ExecEnv("a")
	if err != nil {
		t.Fatal(err)
	}
	got := MergeEnv(env, []string{"BAR=exec"})
	if want := []string{"FOO=from-secret", "BAR=exec", "TOKEN=s3cret"}; !slices.Equal(got, want) {
		t.Errorf("merged env %q, want %q", got, want)
	}
	rec, _ := m.Get("a")
	fi, err := os.Stat(m.secretsPath(rec))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets file: %v %v", fi, err)
	}
	if keys, _ := m.SecretKeys("a"); !slices.Equal(keys, []string{"FOO", "TOKEN"}) {
		t.Errorf("keys %v", keys)
	}
	if err := m.RemoveSecret("a", "TOKEN"); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveSecret("a", "TOKEN"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second RemoveSecret = %v", err)
	}
	// The record never holds a secret.
	b, _ := os.ReadFile(dir + "/wisp.db")
	if strings.Contains(string(b), "s3cret") || strings.Contains(string(b), "from-secret") {
		t.Errorf("the sprite database holds a secret value")
	}
}
