package meter

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// store keeps the records and the hourly series in a bbolt file of its
// own (not the sprites' store: metering writes every interval and must
// not contend with, or be able to corrupt, the records sprites live by).
// Each save is one fsynced transaction, so a kill -9 loses at most the
// interval since the last one.
type store struct{ db *bolt.DB }

var (
	recordsBucket = []byte("records")
	hoursBucket   = []byte("hours") // key: sprite ID, 0, 8-byte big-endian hour (unix seconds)
)

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, errdefs.WithHint(fmt.Errorf("open %s: %w: %w", path, err, errdefs.ErrUnavailable),
			"is another wispd using this data dir?")
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{recordsBucket, hoursBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) records() (map[string]*record, error) {
	out := map[string]*record{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(recordsBucket).ForEach(func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("usage record %s: %w", k, err)
			}
			out[r.ID] = &r
			return nil
		})
	})
	return out, err
}

func hourKey(id string, t time.Time) string {
	k := make([]byte, len(id)+9)
	copy(k, id)
	binary.BigEndian.PutUint64(k[len(id)+1:], uint64(t.UTC().Truncate(time.Hour).Unix()))
	return string(k)
}

// save writes recs and adds hours (deltas keyed by hourKey) in one
// transaction.
func (s *store) save(recs []*record, hours map[string]counters) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		rb, hb := tx.Bucket(recordsBucket), tx.Bucket(hoursBucket)
		for _, r := range recs {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := rb.Put([]byte(r.ID), b); err != nil {
				return err
			}
		}
		for k, d := range hours {
			var c counters
			if v := hb.Get([]byte(k)); v != nil {
				if err := json.Unmarshal(v, &c); err != nil {
					return err
				}
			}
			c.add(d)
			b, err := json.Marshal(c)
			if err != nil {
				return err
			}
			if err := hb.Put([]byte(k), b); err != nil {
				return err
			}
		}
		return nil
	})
}

// hours calls fn for each hour of sprite id from since on, in order.
func (s *store) hours(id string, since time.Time, fn func(time.Time, counters)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(hoursBucket).Cursor()
		prefix := []byte(id + "\x00")
		start := []byte(hourKey(id, since))
		if since.IsZero() {
			start = prefix
		}
		for k, v := c.Seek(start); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			var cn counters
			if err := json.Unmarshal(v, &cn); err != nil {
				return err
			}
			fn(time.Unix(int64(binary.BigEndian.Uint64(k[len(prefix):])), 0).UTC(), cn)
		}
		return nil
	})
}
