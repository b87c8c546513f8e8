package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSignParseCheck(t *testing.T) {
	k := NewKey()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	cred := k.Sign(Grant{Sprite: "web", Port: 8080, Expires: exp})
	g, err := k.Parse(cred, time.Now())
	if err != nil || g.Sprite != "web" || g.Port != 8080 || !g.Expires.Equal(exp) {
		t.Fatalf("Parse = %+v, %v", g, err)
	}
	if err := k.Check(cred, "web", 8080); err != nil {
		t.Errorf("Check: %v", err)
	}
	sig := cred[strings.LastIndex(cred, ".")+1:]
	for _, tc := range []struct {
		what, cred, sprite string
		port               int
	}{
		{"other sprite", cred, "web2", 8080},
		{"other port", cred, "web", 3000},
		{"name swapped in", "v1.api.8080." + strings.Split(cred, ".")[3] + "." + sig, "api", 8080},
		{"port swapped in", "v1.web.3000." + strings.Split(cred, ".")[3] + "." + sig, "web", 3000},
		{"expiry extended", "v1.web.8080.99999999999." + sig, "web", 8080},
		{"other key", NewKey().Sign(Grant{Sprite: "web", Port: 8080, Expires: exp}), "web", 8080},
		{"expired", k.Sign(Grant{Sprite: "web", Port: 8080, Expires: time.Now().Add(-time.Second)}), "web", 8080},
		{"garbage", "hello", "web", 8080},
		{"empty", "", "web", 8080},
		{"too many parts", cred + ".x", "web", 8080},
	} {
		if err := k.Check(tc.cred, tc.sprite, tc.port); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: Check = %v, want ErrDenied", tc.what, err)
		}
	}
}

func TestLoadKeyKeepsOneKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "url.key")
	k1, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != keyLen {
		t.Fatalf("key file: %v %v", fi, err)
	}
	k2, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	cred := k1.Sign(Grant{Sprite: "a", Port: 80, Expires: time.Now().Add(time.Minute)})
	if err := k2.Check(cred, "a", 80); err != nil {
		t.Errorf("a credential does not survive reloading the key: %v", err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadKey(path); err == nil {
		t.Error("a damaged key file was accepted")
	}
}
