package blob

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// SweepStats says what a Sweep found and deleted.
type SweepStats struct {
	Manifests, ManifestsKept, ManifestsDeleted int
	Chunks, ChunksKept, ChunksDeleted          int
	Took                                       time.Duration
}

// Sweep deletes what no live manifest reaches. live(sprite) returns the
// generations of the sprite still reachable (its head, its checkpoints); it
// must be authoritative: a sprite for which it returns none loses every
// manifest older than grace, so a caller that cannot read the cluster's
// state must not sweep.
//
// The roots are the manifests of live generations and every manifest
// younger than grace (a publish whose head is not recorded yet). Other
// manifests older than grace are deleted, then every chunk no root lists
// and older than grace (by the object's modified time, so a publish in
// flight keeps the chunks it uploaded; see Store.ReuseWindow). A root that
// cannot be read stops the Sweep before it deletes any chunk.
func (s *Store) Sweep(ctx context.Context, live func(sprite string) []uint64, grace time.Duration) (SweepStats, error) {
	begin := time.Now()
	cutoff := s.now().Add(-grace)
	var st SweepStats

	type man struct {
		sprite string
		gen    uint64
		key    string
		mod    time.Time
	}
	bySprite := map[string][]man{}
	if err := s.b.List(ctx, "sprites/", func(key string, mod time.Time) error {
		sprite, gen, ok := parseManifestKey(key)
		if !ok {
			return nil // not ours: leave it
		}
		bySprite[sprite] = append(bySprite[sprite], man{sprite, gen, key, mod})
		return nil
	}); err != nil {
		return st, fmt.Errorf("sweep: list manifests: %w", err)
	}
	sprites := make([]string, 0, len(bySprite))
	for sp := range bySprite {
		sprites = append(sprites, sp)
	}
	sort.Strings(sprites)

	var roots []man
	var doomed []string
	for _, sp := range sprites {
		keep := map[uint64]bool{}
		for _, g := range live(sp) {
			keep[g] = true
		}
		for _, m := range bySprite[sp] {
			st.Manifests++
			if keep[m.gen] || !m.mod.Before(cutoff) {
				roots = append(roots, m)
			} else {
				doomed = append(doomed, m.key)
			}
		}
	}
	st.ManifestsKept = len(roots)

	reached := map[string]bool{}
	for _, r := range roots {
		m, err := s.Manifest(ctx, r.sprite, r.gen)
		if err != nil {
			return st, fmt.Errorf("sweep: read a live manifest, so no chunk is deleted: %w", err)
		}
		for _, f := range m.Files {
			for _, h := range f.Chunks {
				if h != "" {
					reached[h] = true
				}
			}
		}
	}

	// Manifests first: a chunk is never deleted while a manifest that
	// lists it stays.
	n, err := s.deleteAll(ctx, doomed)
	st.ManifestsDeleted = n
	if err != nil {
		return st, fmt.Errorf("sweep: delete manifests: %w", err)
	}

	doomed = doomed[:0]
	if err := s.b.List(ctx, "chunks/", func(key string, mod time.Time) error {
		h, ok := parseChunkKey(key)
		if !ok {
			return nil
		}
		st.Chunks++
		if reached[h] || !mod.Before(cutoff) {
			st.ChunksKept++
			return nil
		}
		doomed = append(doomed, key)
		return nil
	}); err != nil {
		return st, fmt.Errorf("sweep: list chunks: %w", err)
	}
	n, err = s.deleteAll(ctx, doomed)
	st.ChunksDeleted = n
	st.Took = time.Since(begin)
	if err != nil {
		return st, fmt.Errorf("sweep: delete chunks: %w", err)
	}
	s.log.Info("swept", "manifests", st.Manifests, "manifests_deleted", st.ManifestsDeleted,
		"chunks", st.Chunks, "chunks_deleted", st.ChunksDeleted, "took", st.Took)
	return st, nil
}

func (s *Store) deleteAll(ctx context.Context, keys []string) (int, error) {
	var n atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(s.parallel())
	for _, k := range keys {
		g.Go(func() error {
			if err := s.b.Delete(ctx, k); err != nil {
				return err
			}
			n.Add(1)
			return nil
		})
	}
	err := g.Wait()
	return int(n.Load()), err
}
