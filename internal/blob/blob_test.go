package blob

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/blob/blobtest"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// fakeS3 is an S3 server in process (blobtest: gofakes3 on loopback)
// reached through the real NewS3 (minio-go over HTTP).
type fakeS3 struct {
	bucket Bucket
	clock  *blobtest.Clock // the objects' modified times
	url    string
}

func newFakeS3(t testing.TB) *fakeS3 {
	t.Helper()
	srv := blobtest.New(t, "")
	b, err := NewS3(S3Config{Endpoint: srv.URL, Bucket: srv.Bucket, Region: "us-east-1", AccessKey: "test", SecretKey: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeS3{bucket: b, clock: srv.Clock, url: srv.URL}
}

// store returns a Store on the fake whose clock is the fake's.
func (f *fakeS3) store(t testing.TB) *Store {
	s := New(f.bucket, t.TempDir(), nil)
	s.Now = f.clock.Now
	return s
}

func TestNewS3MissingBucket(t *testing.T) {
	f := newFakeS3(t)
	_, err := NewS3(S3Config{Endpoint: f.url, Bucket: "nope", AccessKey: "AK", SecretKey: "SK"})
	if !errors.Is(err, errdefs.ErrNotFound) || errdefs.Hint(err) == "" {
		t.Fatalf("NewS3 of a missing bucket = %v (hint %q), want ErrNotFound with a hint", err, errdefs.Hint(err))
	}
	for _, ep := range []string{"ftp://x", "127.0.0.1:9000", "http://h/path"} {
		if _, err := NewS3(S3Config{Endpoint: ep, Bucket: "wisp"}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("NewS3(%q) = %v, want ErrInvalid", ep, err)
		}
	}
}

func TestS3CredentialsFromEnv(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ text, access, secret string }{
		{"AKIA1\nsecret1\n", "AKIA1", "secret1"},
		{"# mine\nAWS_ACCESS_KEY_ID=AKIA2\nexport AWS_SECRET_ACCESS_KEY='s2'\n", "AKIA2", "s2"},
		{"[default]\naws_access_key_id = AKIA3\naws_secret_access_key = s3\n", "AKIA3", "s3"},
	} {
		p := filepath.Join(dir, "creds")
		os.WriteFile(p, []byte(tc.text), 0o600)
		a, s, err := S3CredentialsFromEnv(p)
		if err != nil || a != tc.access || s != tc.secret {
			t.Errorf("from %q: %q %q %v", tc.text, a, s, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "bad"), []byte("just one line\n"), 0o600)
	if _, _, err := S3CredentialsFromEnv(filepath.Join(dir, "bad")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("one line: %v, want ErrInvalid", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "envA")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "envS")
	if a, s, err := S3CredentialsFromEnv(""); err != nil || a != "envA" || s != "envS" {
		t.Errorf("env: %q %q %v", a, s, err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if _, _, err := S3CredentialsFromEnv(""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("env without secret: %v, want ErrInvalid", err)
	}
}

// TestBucket checks the S3 bucket's calls against gofakes3, above all that
// PutIfAbsent's If-None-Match is honoured.
func TestBucket(t *testing.T) {
	ctx := context.Background()
	b := newFakeS3(t).bucket
	if err := b.Put(ctx, "a/one", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := b.PutIfAbsent(ctx, "a/one", []byte("second")); !errors.Is(err, ErrConflict) {
		t.Fatalf("PutIfAbsent on an existing key = %v, want ErrExists", err)
	}
	if got := get(t, b, "a/one"); got != "first" {
		t.Fatalf("after a refused PutIfAbsent the object holds %q", got)
	}
	if err := b.PutIfAbsent(ctx, "a/two", []byte("2")); err != nil {
		t.Fatalf("PutIfAbsent on a new key: %v", err)
	}
	if err := b.PutIfAbsent(ctx, "a/two", []byte("again")); !errors.Is(err, ErrConflict) {
		t.Fatalf("second PutIfAbsent = %v, want ErrExists", err)
	}
	if err := b.Put(ctx, "a/one", []byte("over")); err != nil || get(t, b, "a/one") != "over" {
		t.Fatalf("Put does not overwrite: %v", err)
	}
	if _, err := b.Get(ctx, "a/none"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get of an absent key = %v, want ErrNotFound", err)
	}
	if _, err := b.Stat(ctx, "a/none"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Stat of an absent key = %v, want ErrNotFound", err)
	}
	if ok, err := b.Exists(ctx, "a/two"); !ok || err != nil {
		t.Fatalf("Exists(a/two) = %v, %v", ok, err)
	}
	if ok, err := b.Exists(ctx, "a/none"); ok || err != nil {
		t.Fatalf("Exists(a/none) = %v, %v", ok, err)
	}
	var keys []string
	if err := b.List(ctx, "a/", func(k string, mod time.Time) error {
		if mod.IsZero() {
			t.Errorf("%s: no modified time", k)
		}
		keys = append(keys, k)
		return nil
	}); err != nil || strings.Join(keys, ",") != "a/one,a/two" {
		t.Fatalf("List = %v, %v", keys, err)
	}
	stop := errors.New("stop")
	if err := b.List(ctx, "a/", func(string, time.Time) error { return stop }); err != stop {
		t.Fatalf("List's fn error = %v", err)
	}
	if err := b.Delete(ctx, "a/one"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "a/one"); err != nil {
		t.Fatalf("Delete of an absent key: %v", err)
	}
	if ok, _ := b.Exists(ctx, "a/one"); ok {
		t.Fatal("a/one still exists")
	}
}

func get(t *testing.T, b Bucket, key string) string {
	t.Helper()
	rc, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// writeAt writes data into the file at off, creating it.
func writeAt(t testing.TB, p string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func truncate(t testing.TB, p string, size int64) {
	t.Helper()
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sameFile fails the test unless the two files are byte-equal.
func sameFile(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	sa, _ := fa.Stat()
	sb, _ := fb.Stat()
	if sa.Size() != sb.Size() {
		t.Fatalf("%s is %d bytes, %s %d", a, sa.Size(), b, sb.Size())
	}
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < sa.Size(); off += int64(len(ba)) {
		na, _ := fa.ReadAt(ba, off)
		nb, _ := fb.ReadAt(bb, off)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			t.Fatalf("%s and %s differ in the MiB at %d", a, b, off)
		}
	}
}

func allocated(t *testing.T, p string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestPublishHydrateRoundTrip(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	src := t.TempDir()
	r := rand.New(rand.NewPCG(1, 2))

	// A sparse file with holes between data, data straddling chunks, and
	// chunks of written zeros.
	holes := filepath.Join(src, "holes")
	writeAt(t, holes, 0, randBytes(r, 1000))
	writeAt(t, holes, 3*ChunkSize-100, randBytes(r, 300))
	writeAt(t, holes, 10*ChunkSize, make([]byte, 2*ChunkSize))
	writeAt(t, holes, 20*ChunkSize+5, []byte("x"))
	truncate(t, holes, 40*ChunkSize)
	// 1 GiB, sparse, with a few MiB of data.
	big := filepath.Join(src, "big")
	writeAt(t, big, 0, nil)
	truncate(t, big, 1<<30)
	for _, off := range []int64{0, 100 << 20, 512<<20 + 12345, 1<<30 - 3<<20} {
		writeAt(t, big, off, randBytes(r, 1<<20))
	}
	// A size that is not a multiple of the chunk size, the same chunk twice.
	odd := filepath.Join(src, "odd")
	rep := randBytes(r, ChunkSize)
	writeAt(t, odd, 0, append(append(append([]byte{}, rep...), rep...), randBytes(r, 12345)...))
	empty := filepath.Join(src, "empty")
	writeAt(t, empty, 0, nil)
	os.Chmod(empty, 0o600)

	files := []File{{"holes", holes}, {"disk.img", big}, {"sleep/memory", odd}, {"sleep/state", empty}}
	m, st, err := s.Publish(ctx, "dev", 1, "host-a", files, []byte(`{"name":"dev"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("publish: %v", st)
	if st.BytesRead > 16<<20 {
		t.Errorf("publish read %d bytes: holes were read", st.BytesRead)
	}
	// holes: 1 + 2 + 1 chunks; big: 4 MiB over 4 extents, one unaligned; odd: 3 chunks, 2 equal.
	if want := 4 + (16 + 17 + 16 + 16) + 3; st.Chunks != want {
		t.Errorf("Chunks = %d, want %d", st.Chunks, want)
	}
	if st.ChunksUploaded != st.Chunks-1 || st.ChunksReused != 1 {
		t.Errorf("uploaded %d, reused %d: the repeated chunk must go once", st.ChunksUploaded, st.ChunksReused)
	}
	if h := m.Files[0].Chunks; h[10] != "" || h[11] != "" || h[5] != "" {
		t.Errorf("chunks of zeros or holes got hashes: %q", h[:12])
	}
	got, err := s.Manifest(ctx, "dev", 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Meta) != `{"name":"dev"}` || got.Host != "host-a" || len(got.Files) != 4 {
		t.Fatalf("manifest read back: %+v", got)
	}

	dst := t.TempDir()
	hs, err := f.store(t).Hydrate(ctx, got, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hydrate: %v", hs)
	if hs.ChunksDownloaded != st.ChunksUploaded || hs.ChunksReused != 1 {
		t.Errorf("hydrate downloaded %d, reused %d; want %d and 1", hs.ChunksDownloaded, hs.ChunksReused, st.ChunksUploaded)
	}
	for _, fl := range files {
		sameFile(t, fl.Path, filepath.Join(dst, fl.Name))
	}
	if a := allocated(t, filepath.Join(dst, "disk.img")); a > 32<<20 {
		t.Errorf("hydrated 1 GiB sparse disk allocates %d bytes: holes were filled", a)
	}
	if fi, err := os.Stat(filepath.Join(dst, "sleep/state")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("sleep/state: %v %v, want mode 0600", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dst)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestPublishTwice(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	p := filepath.Join(t.TempDir(), "f")
	writeAt(t, p, 0, []byte("hello"))
	if _, _, err := s.Publish(ctx, "dev", 7, "a", []File{{"f", p}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	writeAt(t, p, 0, []byte("HELLO"))
	_, _, err := s.Publish(ctx, "dev", 7, "b", []File{{"f", p}}, nil, nil)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("second publish of gen 7 = %v, want ErrExists", err)
	}
	m, err := s.Manifest(ctx, "dev", 7)
	if err != nil || m.Host != "a" {
		t.Fatalf("gen 7 after a refused publish: %+v %v", m, err)
	}
	for _, bad := range [][]File{{{"../x", p}}, {{"/abs", p}}, {{"a", p}, {"a", p}}, {{"s", p}, {"s/m", p}}} {
		if _, _, err := s.Publish(ctx, "dev", 8, "a", bad, nil, nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("publish of %v = %v, want ErrInvalid", bad, err)
		}
	}
	if gens, err := s.Generations(ctx, "dev"); err != nil || len(gens) != 1 || gens[0] != 7 {
		t.Errorf("generations: %v %v", gens, err)
	}
	if _, err := s.Manifest(ctx, "dev", 8); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("refused publishes wrote gen 8: %v", err)
	}
}

// TestPublishIncremental: a second publish uploads only the changed chunks.
func TestPublishIncremental(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	r := rand.New(rand.NewPCG(3, 4))
	p := filepath.Join(t.TempDir(), "disk")
	writeAt(t, p, 0, randBytes(r, 50*ChunkSize+77))
	m1, st, err := s.Publish(ctx, "dev", 1, "a", []File{{"disk.img", p}}, nil, nil)
	if err != nil || st.ChunksUploaded != 51 {
		t.Fatalf("gen 1: %v, %v", st, err)
	}
	writeAt(t, p, 3*ChunkSize+10, []byte("changed"))
	writeAt(t, p, 40*ChunkSize, randBytes(r, ChunkSize+1)) // two chunks
	writeAt(t, p, 50*ChunkSize, []byte("tail"))
	_, st, err = s.Publish(ctx, "dev", 2, "a", []File{{"disk.img", p}}, nil, &m1)
	if err != nil {
		t.Fatal(err)
	}
	if st.ChunksUploaded != 4 || st.ChunksReused != 47 {
		t.Fatalf("gen 2 with prev uploaded %d, reused %d; want 4 and 47", st.ChunksUploaded, st.ChunksReused)
	}
	// Without prev, the store is asked.
	_, st, err = s.Publish(ctx, "dev", 3, "a", []File{{"disk.img", p}}, nil, nil)
	if err != nil || st.ChunksUploaded != 0 || st.ChunksReused != 51 {
		t.Fatalf("gen 3 without prev: %v, %v; want nothing uploaded", st, err)
	}
	// A chunk older than the reuse window is uploaded again.
	f.clock.Advance(2 * time.Hour)
	_, st, err = s.Publish(ctx, "dev", 4, "a", []File{{"disk.img", p}}, nil, nil)
	if err != nil || st.ChunksUploaded != 51 {
		t.Fatalf("gen 4 after the reuse window: %v, %v; want all 51 refreshed", st, err)
	}
}

// TestHydrateBase: chunks a local base holds are copied, not downloaded.
func TestHydrateBase(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	r := rand.New(rand.NewPCG(5, 6))
	dir := t.TempDir()
	template := filepath.Join(dir, "template")
	writeAt(t, template, 0, randBytes(r, 30*ChunkSize))
	truncate(t, template, 64*ChunkSize)
	disk := filepath.Join(dir, "disk")
	data, _ := os.ReadFile(template)
	os.WriteFile(disk, data, 0o644)
	writeAt(t, disk, 5*ChunkSize, randBytes(r, 2*ChunkSize))
	writeAt(t, disk, 50*ChunkSize, []byte("new"))
	m, _, err := s.Publish(ctx, "dev", 1, "a", []File{{"disk.img", disk}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	s2 := New(f.bucket, cache, nil)
	for round := range 2 { // the second from the cached index
		dst := t.TempDir()
		st, err := s2.Hydrate(ctx, m, dst, map[string]string{"disk.img": template, "other": filepath.Join(dir, "missing")})
		if err != nil {
			t.Fatal(err)
		}
		if st.ChunksDownloaded != 3 || st.ChunksReused != 28 {
			t.Fatalf("round %d: downloaded %d, reused %d; want 3 and 28", round, st.ChunksDownloaded, st.ChunksReused)
		}
		sameFile(t, disk, filepath.Join(dst, "disk.img"))
		if ents, _ := os.ReadDir(cache); len(ents) != 1 {
			t.Fatalf("cache holds %d entries, want one index", len(ents))
		}
	}
	// A base that changed since it was indexed is not trusted.
	writeAt(t, template, 0, bytes.Repeat([]byte("z"), ChunkSize))
	dst := t.TempDir()
	st, err := s2.Hydrate(ctx, m, dst, map[string]string{"disk.img": template})
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, disk, filepath.Join(dst, "disk.img"))
	if st.ChunksDownloaded != 4 {
		t.Fatalf("after the base changed: downloaded %d, want 4", st.ChunksDownloaded)
	}
	// The file being replaced is a base too.
	st, err = s2.Hydrate(ctx, m, dst, map[string]string{"disk.img": filepath.Join(dst, "disk.img")})
	if err != nil || st.ChunksDownloaded != 0 {
		t.Fatalf("hydrate over itself: %v, %v", st, err)
	}
	sameFile(t, disk, filepath.Join(dst, "disk.img"))
}

// TestHydrateCorrupt: a corrupt or missing chunk fails the hydrate, names
// the chunk, and leaves no file.
func TestHydrateCorrupt(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	r := rand.New(rand.NewPCG(7, 8))
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeAt(t, a, 0, randBytes(r, 10*ChunkSize))
	writeAt(t, b, 0, randBytes(r, 10*ChunkSize))
	m, _, err := s.Publish(ctx, "dev", 1, "h", []File{{"disk.img", a}, {"sleep/memory", b}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	victim := m.Files[1].Chunks[4]
	for _, tc := range []struct {
		name   string
		break_ func()
	}{
		{"garbage", func() { f.bucket.Put(ctx, chunkKey(victim), []byte("not zstd")) }},
		{"other chunk", func() { f.bucket.Put(ctx, chunkKey(victim), s.enc.EncodeAll(randBytes(r, ChunkSize), nil)) }},
		{"truncated", func() { f.bucket.Put(ctx, chunkKey(victim), s.enc.EncodeAll(make([]byte, 100), nil)) }},
		{"missing", func() { f.bucket.Delete(ctx, chunkKey(victim)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.break_()
			dst := t.TempDir()
			_, err := s.Hydrate(ctx, m, dst, nil)
			if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), victim) {
				t.Fatalf("hydrate with a %s chunk = %v, want ErrUnavailable naming %s", tc.name, err, victim)
			}
			var left []string
			filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
				if d != nil && !d.IsDir() {
					left = append(left, p)
				}
				return nil
			})
			if len(left) > 0 {
				t.Fatalf("a failed hydrate left %v", left)
			}
		})
	}
}

// TestManifestRefused: malformed manifests in the store are refused.
func TestManifestRefused(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	h := strings.Repeat("ab", 32)
	good := Manifest{Sprite: "dev", Generation: 1, ChunkSize: ChunkSize,
		Files: []FileEntry{{Name: "disk.img", Size: ChunkSize + 1, Mode: 0o644, Chunks: []string{h, ""}}}}
	for _, tc := range []struct {
		name string
		edit func(m *Manifest)
	}{
		{"dotdot", func(m *Manifest) { m.Files[0].Name = "../x" }},
		{"inner dotdot", func(m *Manifest) { m.Files[0].Name = "a/../../x" }},
		{"absolute", func(m *Manifest) { m.Files[0].Name = "/etc/passwd" }},
		{"unclean", func(m *Manifest) { m.Files[0].Name = "a//b" }},
		{"too few chunks", func(m *Manifest) { m.Files[0].Chunks = []string{h} }},
		{"too many chunks", func(m *Manifest) { m.Files[0].Chunks = []string{h, h, h} }},
		{"bad hex", func(m *Manifest) { m.Files[0].Chunks[0] = strings.Repeat("AB", 32) }},
		{"short hash", func(m *Manifest) { m.Files[0].Chunks[0] = "abcd" }},
		{"negative size", func(m *Manifest) { m.Files[0].Size = -1 }},
		{"chunk size", func(m *Manifest) { m.ChunkSize = 0 }},
		{"mode", func(m *Manifest) { m.Files[0].Mode = 0o4755 }},
		{"other gen", func(m *Manifest) { m.Generation = 2 }},
		{"duplicate", func(m *Manifest) { m.Files = append(m.Files, m.Files[0]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			m.Files = []FileEntry{good.Files[0]}
			m.Files[0].Chunks = append([]string(nil), good.Files[0].Chunks...)
			tc.edit(&m)
			body, _ := json.Marshal(m)
			key := ManifestKey("dev", 1)
			if err := f.bucket.Put(ctx, key, body); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Manifest(ctx, "dev", 1); !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Manifest = %v, want ErrInvalid", err)
			}
			if _, err := s.Hydrate(ctx, m, t.TempDir(), nil); tc.name != "other gen" && !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Hydrate = %v, want ErrInvalid", err)
			}
		})
	}
	body, _ := json.Marshal(good)
	f.bucket.Put(ctx, ManifestKey("dev", 1), body)
	if _, err := s.Manifest(ctx, "dev", 1); err != nil {
		t.Fatalf("the good manifest: %v", err)
	}
	f.bucket.Put(ctx, ManifestKey("dev", 1), append(body, []byte(" {}")...))
	if _, err := s.Manifest(ctx, "dev", 1); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("trailing data: %v", err)
	}
}

// TestSweep: unreachable manifests and chunks older than grace go; live
// ones and young ones stay.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	r := rand.New(rand.NewPCG(9, 10))
	p := filepath.Join(t.TempDir(), "disk")
	writeAt(t, p, 0, randBytes(r, 8*ChunkSize))
	m1, _, err := s.Publish(ctx, "dev", 1, "a", []File{{"disk.img", p}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	writeAt(t, p, 0, randBytes(r, 2*ChunkSize)) // chunks 0 and 1 change
	m2, _, err := s.Publish(ctx, "dev", 2, "a", []File{{"disk.img", p}}, nil, &m1)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "o")
	writeAt(t, other, 0, randBytes(r, ChunkSize))
	gone, _, err := s.Publish(ctx, "gone", 1, "a", []File{{"f", other}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	// A publish in flight: its chunk is uploaded, its manifest not yet.
	young := strings.Repeat("cd", 32)
	f.bucket.Put(ctx, chunkKey(young), []byte("x"))
	f.bucket.Put(ctx, "sprites/README", []byte("not a manifest"))

	live := func(sprite string) []uint64 {
		if sprite == "dev" {
			return []uint64{2}
		}
		return nil
	}
	st, err := s.Sweep(ctx, live, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
	if st.ManifestsDeleted != 2 || st.ChunksDeleted != 3 {
		t.Fatalf("sweep deleted %d manifests and %d chunks, want 2 (dev gen 1, gone gen 1) and 3", st.ManifestsDeleted, st.ChunksDeleted)
	}
	exists := func(key string) bool {
		ok, err := f.bucket.Exists(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, h := range m1.Files[0].Chunks[:2] {
		if exists(chunkKey(h)) {
			t.Errorf("chunk %s of gen 1 only survived", h)
		}
	}
	if exists(chunkKey(gone.Files[0].Chunks[0])) || exists(ManifestKey("dev", 1)) || exists(ManifestKey("gone", 1)) {
		t.Error("unreachable objects survived")
	}
	if !exists(chunkKey(young)) || !exists("sprites/README") {
		t.Error("a young chunk or a foreign object was deleted")
	}
	dst := t.TempDir()
	if _, err := f.store(t).Hydrate(ctx, m2, dst, nil); err != nil {
		t.Fatalf("the live generation after the sweep: %v", err)
	}
	sameFile(t, p, filepath.Join(dst, "disk.img"))

	// Grace 0 takes the young orphan too, nothing live.
	f.clock.Advance(time.Second)
	st, err = s.Sweep(ctx, live, 0)
	if err != nil || st.ChunksDeleted != 1 || st.ManifestsDeleted != 0 || exists(chunkKey(young)) {
		t.Fatalf("sweep with grace 0: %+v %v", st, err)
	}
	if gens, err := s.Generations(ctx, "dev"); err != nil || len(gens) != 1 || gens[0] != 2 {
		t.Fatalf("generations of dev after the sweep: %v %v", gens, err)
	}
	// A manifest younger than grace is a root even if live does not know it.
	writeAt(t, p, 0, randBytes(r, ChunkSize))
	if _, _, err := s.Publish(ctx, "dev", 3, "a", []File{{"disk.img", p}}, nil, &m2); err != nil {
		t.Fatal(err)
	}
	st, err = s.Sweep(ctx, live, 30*time.Minute)
	if err != nil || st.ManifestsDeleted != 0 || st.ChunksDeleted != 0 {
		t.Fatalf("sweep with a young gen 3: %+v %v", st, err)
	}
}

// failingBucket fails the Put calls after the first okPuts.
type failingBucket struct {
	Bucket
	okPuts atomic.Int64
}

func (b *failingBucket) Put(ctx context.Context, key string, body []byte) error {
	if b.okPuts.Add(-1) < 0 {
		return fmt.Errorf("put %s: injected: %w", key, errdefs.ErrUnavailable)
	}
	return b.Bucket.Put(ctx, key, body)
}

// TestPublishFailsMidway: a publish that fails before its manifest leaves
// the previous generation whole and its own chunks to the sweep.
func TestPublishFailsMidway(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	r := rand.New(rand.NewPCG(13, 14))
	p := filepath.Join(t.TempDir(), "disk")
	writeAt(t, p, 0, randBytes(r, 20*ChunkSize))
	m1, _, err := s.Publish(ctx, "dev", 1, "a", []File{{"disk.img", p}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(p)
	writeAt(t, p, 0, randBytes(r, 10*ChunkSize))
	fb := &failingBucket{Bucket: f.bucket}
	fb.okPuts.Store(5)
	bad := New(fb, "", nil)
	bad.Now = f.clock.Now
	_, st, err := bad.Publish(ctx, "dev", 2, "a", []File{{"disk.img", p}}, nil, &m1)
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("publish with failing puts = %v, want ErrUnavailable", err)
	}
	if _, err := s.Manifest(ctx, "dev", 2); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a failed publish left a manifest: %v", err)
	}
	dst := t.TempDir()
	if _, err := s.Hydrate(ctx, m1, dst, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "disk.img")); !bytes.Equal(got, want) {
		t.Fatal("gen 1 is not whole after a failed publish of gen 2")
	}
	f.clock.Advance(time.Hour)
	sw, err := s.Sweep(ctx, func(string) []uint64 { return []uint64{1} }, time.Minute)
	if err != nil || sw.ChunksDeleted != 5 || st.ChunksUploaded != 5 || sw.ChunksKept != 20 {
		t.Fatalf("sweep after a failed publish: %+v %v; want its 5 orphans gone, gen 1's 20 kept", sw, err)
	}
}

// TestHydrateConfined: a symlink in dir does not take a write out of it.
func TestHydrateConfined(t *testing.T) {
	ctx := context.Background()
	f := newFakeS3(t)
	s := f.store(t)
	p := filepath.Join(t.TempDir(), "m")
	writeAt(t, p, 0, []byte("memory"))
	m, _, err := s.Publish(ctx, "dev", 1, "a", []File{{"sleep/memory", p}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dst, "sleep")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Hydrate(ctx, m, dst, nil); err == nil {
		t.Fatal("hydrate through a symlink out of dir succeeded")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("hydrate wrote outside dir: %v", ents)
	}
}
