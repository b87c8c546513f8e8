// Package token keeps the bearer tokens that open wispd's API over TCP and
// the API keys of its E2B-compatible API.
//
// A token is 32 random bytes (an E2B key 20), shown once when it is made.
// The store keeps only its SHA-256, with a name, when it was made, its
// kind and an optional list of sprites it is scoped to. A plain hash
// suffices where a password would need a slow, salted one (bcrypt,
// argon2): those defend guessable secrets against a search of likely
// values, and a token has 160 to 256 bits of entropy, so there is no
// likely value to search; recovering a token from its hash is a preimage
// of SHA-256. A leaked store therefore opens nothing, and a check costs a
// hash, not tens of milliseconds per request.
//
// Records live in a bbolt file of their own (tokens.db in the data dir):
// the sprite metadata store is the Manager's, locked by it, and tokens are
// not sprites; a file per concern keeps either free to change.
// Every record is also held in memory, so a revoke takes effect at the
// next request and a check touches no disk.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Kind says which API a token opens.
type Kind string

const (
	// Wisp tokens read `wisp_` and 64 hex digits; they go in
	// `Authorization: Bearer`.
	Wisp Kind = "wisp"
	// E2B keys read `e2b_` and 40 hex digits, the form E2B's SDKs expect
	// of an API key (X-API-Key).
	E2B Kind = "e2b"
)

// Prefixes and secret sizes (random bytes) of each kind.
const (
	WispPrefix = "wisp_"
	E2BPrefix  = "e2b_"
	wispBytes  = 32
	e2bBytes   = 20
)

// Token is a token's record: everything but the secret.
type Token struct {
	Name    string    `json:"name"`
	Kind    Kind      `json:"kind"`
	Sprites []string  `json:"sprites,omitempty"` // empty: every sprite, and the whole API
	Created time.Time `json:"created"`
	Hash    string    `json:"sha256"` // hex SHA-256 of the secret
}

// Scoped reports whether the token is limited to some sprites. A scoped
// token sees and touches only those; it cannot create sprites or manage
// images.
func (t Token) Scoped() bool { return len(t.Sprites) > 0 }

// Allows reports whether the token may touch the sprite.
func (t Token) Allows(sprite string) bool {
	return !t.Scoped() || slices.Contains(t.Sprites, sprite)
}

// Store keeps tokens in a bbolt file and in memory.
type Store struct {
	db *bolt.DB

	mu     sync.RWMutex
	tokens map[string]entry // by name
}

type entry struct {
	tok  Token
	hash [sha256.Size]byte
}

var bucket = []byte("tokens")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Open opens (creating) the store at path and loads its records.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, errdefs.WithHint(fmt.Errorf("open %s: %w: %w", path, err, errdefs.ErrUnavailable),
			"is another wispd using this data dir?")
	}
	s := &Store{db: db, tokens: map[string]entry{}}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var t Token
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("token record %q: %w", k, err)
			}
			h, err := hex.DecodeString(t.Hash)
			if err != nil || len(h) != sha256.Size {
				return fmt.Errorf("token record %q: bad hash", k)
			}
			s.tokens[t.Name] = entry{tok: t, hash: [sha256.Size]byte(h)}
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Create makes a token named name of kind, scoped to sprites (none: all),
// and returns its secret, which is kept nowhere. A name in use fails with
// ErrExists; a bad name or kind with ErrInvalid.
func (s *Store) Create(name string, kind Kind, sprites []string) (string, Token, error) {
	if !nameRE.MatchString(name) {
		return "", Token{}, fmt.Errorf("token name %q: want letters, digits, '.', '_' or '-' (at most 63, first a letter or digit): %w", name, errdefs.ErrInvalid)
	}
	var prefix string
	var n int
	switch kind {
	case Wisp, "":
		kind, prefix, n = Wisp, WispPrefix, wispBytes
	case E2B:
		prefix, n = E2BPrefix, e2bBytes
	default:
		return "", Token{}, fmt.Errorf("token kind %q: want wisp or e2b: %w", kind, errdefs.ErrInvalid)
	}
	scope := []string{}
	for _, sp := range sprites {
		if !nameRE.MatchString(sp) {
			return "", Token{}, fmt.Errorf("sprite name %q in the scope: %w", sp, errdefs.ErrInvalid)
		}
		if !slices.Contains(scope, sp) {
			scope = append(scope, sp)
		}
	}
	if len(scope) == 0 {
		scope = nil
	}
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand panics rather)
	secret := prefix + hex.EncodeToString(b)
	h := sha256.Sum256([]byte(secret))
	t := Token{Name: name, Kind: kind, Sprites: scope, Created: time.Now().UTC().Truncate(time.Second), Hash: hex.EncodeToString(h[:])}
	rec, err := json.Marshal(t)
	if err != nil {
		return "", Token{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if bk.Get([]byte(name)) != nil {
			return fmt.Errorf("token %q: %w", name, errdefs.ErrExists)
		}
		return bk.Put([]byte(name), rec)
	})
	if err != nil {
		return "", Token{}, err
	}
	s.tokens[name] = entry{tok: t, hash: h}
	return secret, t, nil
}

// List returns every token's record, by name.
func (s *Store) List() []Token {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Token, 0, len(s.tokens))
	for _, e := range s.tokens {
		out = append(out, e.tok)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Revoke deletes the token: from the next request on, it opens nothing.
// An unknown name fails with ErrNotFound.
func (s *Store) Revoke(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tokens[name]; !ok {
		return fmt.Errorf("token %q: %w", name, errdefs.ErrNotFound)
	}
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(name)) })
	if err != nil {
		return err
	}
	delete(s.tokens, name)
	return nil
}

// Lookup returns the record of the token whose secret is secret, of any
// kind; ok is false for anything else. It compares the secret's hash
// with every record's in constant time, so how long it takes says nothing
// about which token, or how much of one, a guess matched.
func (s *Store) Lookup(secret string) (t Token, ok bool) {
	if len(secret) > 128 || !(strings.HasPrefix(secret, WispPrefix) || strings.HasPrefix(secret, E2BPrefix)) {
		return Token{}, false
	}
	h := sha256.Sum256([]byte(secret))
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, e := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], e.hash[:]) == 1 {
			t, ok = e.tok, true
		}
	}
	return t, ok
}
