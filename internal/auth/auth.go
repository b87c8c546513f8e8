// Package auth issues and checks the credentials that open a private
// sprite's URL: an HMAC-signed grant of one port of one sprite until a
// time, under a key that wispd makes once and keeps in its data dir.
//
// A credential reads `v1.NAME.PORT.EXPIRES.SIG`: the sprite's name, the
// port, the expiry in Unix seconds and the base64url HMAC-SHA256 of those
// three under the key. It opens that port of that sprite only, until then.
// Rotating the key (deleting the file and restarting wispd) revokes every
// credential issued.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Grant is what a credential allows: Port of Sprite until Expires.
type Grant struct {
	Sprite  string
	Port    int
	Expires time.Time
}

// Key signs and checks credentials.
type Key struct{ k []byte }

const keyLen = 32

// ErrDenied is the kind of every refusal of a credential.
var ErrDenied = errors.New("credential refused")

// LoadKey reads the key at path, making it (32 random bytes, mode 0600)
// when there is none.
func LoadKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != keyLen {
			return nil, fmt.Errorf("url key %s: %d bytes, want %d (delete it to make a new one; that revokes every signed URL)", path, len(b), keyLen)
		}
		return &Key{k: b}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k := NewKey()
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(k.k)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("write url key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return k, nil
}

// NewKey returns a random key that is kept nowhere (tests).
func NewKey() *Key {
	b := make([]byte, keyLen)
	rand.Read(b)
	return &Key{k: b}
}

func (k *Key) mac(name string, port int, exp int64) []byte {
	h := hmac.New(sha256.New, k.k)
	fmt.Fprintf(h, "wisp-url-v1\x00%s\x00%d\x00%d", name, port, exp)
	return h.Sum(nil)
}

// Sign returns the credential of g.
func (k *Key) Sign(g Grant) string {
	exp := g.Expires.Unix()
	return fmt.Sprintf("v1.%s.%d.%d.%s", g.Sprite, g.Port, exp, base64.RawURLEncoding.EncodeToString(k.mac(g.Sprite, g.Port, exp)))
}

// Parse checks cred's signature and expiry at now and returns its grant.
// Every refusal wraps ErrDenied and says why in words a person can act on.
func (k *Key) Parse(cred string, now time.Time) (Grant, error) {
	f := strings.Split(cred, ".")
	if len(f) != 5 || f[0] != "v1" || len(cred) > 256 {
		return Grant{}, fmt.Errorf("not a wisp URL credential: %w", ErrDenied)
	}
	port, perr := strconv.Atoi(f[2])
	exp, eerr := strconv.ParseInt(f[3], 10, 64)
	sig, serr := base64.RawURLEncoding.DecodeString(f[4])
	if perr != nil || eerr != nil || serr != nil || !hmac.Equal(sig, k.mac(f[1], port, exp)) {
		return Grant{}, fmt.Errorf("credential signature does not check out (altered, or signed under another key): %w", ErrDenied)
	}
	g := Grant{Sprite: f[1], Port: port, Expires: time.Unix(exp, 0)}
	if !now.Before(g.Expires) {
		return g, fmt.Errorf("credential expired at %s: %w", g.Expires.UTC().Format(time.RFC3339), ErrDenied)
	}
	return g, nil
}

// Check reports whether cred opens port of sprite now (nil) or why not.
func (k *Key) Check(cred, sprite string, port int) error {
	g, err := k.Parse(cred, time.Now())
	if err != nil {
		return err
	}
	if g.Sprite != sprite || g.Port != port {
		return fmt.Errorf("credential is for port %d of sprite %q: %w", g.Port, g.Sprite, ErrDenied)
	}
	return nil
}
