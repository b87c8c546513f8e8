package token

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCreateLookupRevoke(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s := open(t, path)
	secret, tok, err := s.Create("ci", Wisp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^wisp_[0-9a-f]{64}$`).MatchString(secret) {
		t.Fatalf("secret %q: want wisp_ and 64 hex digits", secret)
	}
	if tok.Name != "ci" || tok.Kind != Wisp || tok.Scoped() || tok.Created.IsZero() {
		t.Fatalf("record %+v", tok)
	}
	got, ok := s.Lookup(secret)
	if !ok || got.Name != "ci" {
		t.Fatalf("Lookup(secret) = %+v, %v", got, ok)
	}
	for _, bad := range []string{"", "wisp_", secret[:len(secret)-1], secret + "0", "e2b_" + secret[5:45], "Bearer " + secret} {
		if _, ok := s.Lookup(bad); ok {
			t.Errorf("Lookup(%q) accepted", bad)
		}
	}
	if _, _, err := s.Create("ci", Wisp, nil); !errors.Is(err, errdefs.ErrExists) {
		t.Errorf("second ci: %v, want ErrExists", err)
	}
	if err := s.Revoke("ci"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup(secret); ok {
		t.Error("revoked token still accepted")
	}
	if err := s.Revoke("ci"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("revoke twice: %v, want ErrNotFound", err)
	}
}

// The file holds the SHA-256 of a secret, never the secret, and what it
// holds survives a reopen (a revoke too).
func TestOnlyTheHashIsStored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := s.Create("keep", Wisp, []string{"web"})
	if err != nil {
		t.Fatal(err)
	}
	gone, _, err := s.Create("gone", E2B, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke("gone"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hexSecret := secret[len(WispPrefix):]
	bin, _ := hex.DecodeString(hexSecret)
	for _, leak := range [][]byte{[]byte(secret), []byte(hexSecret), bin} {
		if bytes.Contains(raw, leak) {
			t.Fatalf("the store file holds the secret (%d bytes of it)", len(leak))
		}
	}
	h := sha256.Sum256([]byte(secret))
	if !bytes.Contains(raw, []byte(hex.EncodeToString(h[:]))) {
		t.Fatal("the store file does not hold the secret's SHA-256")
	}

	s = open(t, path)
	got, ok := s.Lookup(secret)
	if !ok || got.Name != "keep" || !got.Allows("web") || got.Allows("db") {
		t.Fatalf("after reopen: %+v, %v", got, ok)
	}
	if _, ok := s.Lookup(gone); ok {
		t.Fatal("a revoked key came back after reopen")
	}
	if l := s.List(); len(l) != 1 || l[0].Name != "keep" {
		t.Fatalf("List = %+v", l)
	}
}

func TestScopeAndKinds(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "tokens.db"))
	_, tok, err := s.Create("two", Wisp, []string{"a", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Scoped() || len(tok.Sprites) != 2 || !tok.Allows("a") || !tok.Allows("b") || tok.Allows("c") {
		t.Fatalf("scope %+v", tok)
	}
	_, all, _ := s.Create("all", Wisp, []string{})
	if all.Scoped() || !all.Allows("anything") {
		t.Fatalf("unscoped %+v", all)
	}
	key, k, err := s.Create("sdk", E2B, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^e2b_[0-9a-f]{40}$`).MatchString(key) || k.Kind != E2B {
		t.Fatalf("e2b key %q (%+v)", key, k)
	}
	if got, ok := s.Lookup(key); !ok || got.Kind != E2B {
		t.Fatalf("Lookup(e2b key) = %+v, %v", got, ok)
	}
	for _, c := range []struct {
		name    string
		kind    Kind
		sprites []string
	}{{"", Wisp, nil}, {"a/b", Wisp, nil}, {"-x", Wisp, nil}, {"ok", "root", nil}, {"ok", Wisp, []string{"../x"}}} {
		if _, _, err := s.Create(c.name, c.kind, c.sprites); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Create(%q, %q, %q) = %v, want ErrInvalid", c.name, c.kind, c.sprites, err)
		}
	}
}
