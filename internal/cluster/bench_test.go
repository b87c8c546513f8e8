package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/wisp-sh/wisp/internal/cluster/clustertest"
)

// BenchmarkClaim measures a Claim on a one-member etcd on loopback (each
// iteration also Releases, untimed).
func BenchmarkClaim(b *testing.B) {
	ep := clustertest.StartEtcd(b, b.TempDir())
	n := join(b, []string{ep}, "a")
	publish(b, n, "c")
	ctx := context.Background()
	var claim time.Duration
	for b.Loop() {
		t0 := time.Now()
		f, err := n.Claim(ctx, "c")
		claim += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Release(ctx, "c", f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(claim.Microseconds())/float64(b.N), "claim-µs/op")
}

// BenchmarkSetHead measures publishing a head under a fence.
func BenchmarkSetHead(b *testing.B) {
	ep := clustertest.StartEtcd(b, b.TempDir())
	n := join(b, []string{ep}, "a")
	ctx := context.Background()
	f, err := n.Create(ctx, "h")
	if err != nil {
		b.Fatal(err)
	}
	var gen uint64
	for b.Loop() {
		gen++
		if err := n.SetHead(ctx, "h", f, head(gen)); err != nil {
			b.Fatal(err)
		}
	}
}
