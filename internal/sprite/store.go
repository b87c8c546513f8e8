package sprite

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Store persists sprite records in one bbolt file. bbolt is a pure-Go,
// single-file, fsync-on-commit key/value store: each Put is durable when it
// returns, which is what "persist the state before acting" needs, with no
// cgo and no SQL schema to migrate for a handful of records.
type Store struct {
	db *bolt.DB
}

var spritesBucket = []byte("sprites")

// OpenStore opens (creating) the store at path. A second daemon on the same
// data dir fails here: bbolt holds an exclusive lock.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, errdefs.WithHint(fmt.Errorf("open %s: %w: %w", path, err, errdefs.ErrUnavailable),
			"is another wispd using this data dir?")
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(spritesBucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db}, nil
}

func (s *Store) Close() error { return s.db.Close() }

// Put writes the record durably.
func (s *Store) Put(sp Sprite) error {
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(spritesBucket).Put([]byte(sp.Name), b)
	})
}

// Insert writes a new record, failing with ErrExists if the name is taken.
func (s *Store) Insert(sp Sprite) error {
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(spritesBucket)
		if bk.Get([]byte(sp.Name)) != nil {
			return fmt.Errorf("sprite %q: %w", sp.Name, errdefs.ErrExists)
		}
		return bk.Put([]byte(sp.Name), b)
	})
}

// Delete removes the record.
func (s *Store) Delete(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(spritesBucket).Delete([]byte(name))
	})
}

// List returns all records, by name.
func (s *Store) List() ([]Sprite, error) {
	var out []Sprite
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(spritesBucket).ForEach(func(k, v []byte) error {
			var sp Sprite
			if err := json.Unmarshal(v, &sp); err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			out = append(out, sp)
			return nil
		})
	})
	return out, err
}
