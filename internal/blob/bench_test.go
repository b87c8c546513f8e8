package blob

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

const benchSize = 256 << 20

// benchFile writes 256 MiB shaped like a sleeping guest's RAM: a quarter
// text-like (compresses about 2:1), an eighth random, the rest zeros, half
// of them holes.
func benchFile(b *testing.B) string {
	p := filepath.Join(b.TempDir(), "memory")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(11, 12))
	buf := make([]byte, ChunkSize)
	const alphabet = "etaoinshrdlu    \n\n{}();=0123456789"
	for i := int64(0); i < benchSize/ChunkSize; i++ {
		switch i % 8 {
		case 0, 1:
			for j := range buf {
				buf[j] = alphabet[r.IntN(len(alphabet))]
			}
		case 2:
			for j := range buf {
				buf[j] = byte(r.Uint32())
			}
		case 3, 4:
			clear(buf)
		default:
			continue // a hole
		}
		if _, err := f.WriteAt(buf, i*ChunkSize); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(benchSize); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkPublish publishes 256 MiB into an empty bucket on loopback
// (gofakes3 through minio-go); MB/s is of the file's size.
func BenchmarkPublish(b *testing.B) {
	p := benchFile(b)
	b.SetBytes(benchSize)
	var st Stats
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := newFakeS3(b)
		s := New(f.bucket, "", nil)
		b.StartTimer()
		var err error
		_, st, err = s.Publish(context.Background(), "bench", 1, "a", []File{{"sleep/memory", p}}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.BytesUploaded)/(1<<20), "MiB-uploaded")
	b.ReportMetric(float64(st.BytesNonZero)/float64(st.BytesUploaded), "ratio")
}

// BenchmarkHydrate hydrates the same 256 MiB from the bucket with no base.
func BenchmarkHydrate(b *testing.B) {
	p := benchFile(b)
	f := newFakeS3(b)
	s := New(f.bucket, "", nil)
	m, _, err := s.Publish(context.Background(), "bench", 1, "a", []File{{"sleep/memory", p}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(b.TempDir(), fmt.Sprint(i))
		if _, err := s.Hydrate(context.Background(), m, dir, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(dir)
		b.StartTimer()
	}
}
