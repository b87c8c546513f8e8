package integration

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/cluster/clustertest"
)

// testCluster is an embedded etcd and an in-process S3 server on
// loopback, and the wispd flags that join them.
type testCluster struct {
	etcd, s3 string         // etcd: its endpoints, comma-separated
	be       *s3mem.Backend // the object store's backend, for tests that reach into it
	observer *cluster.Node  // the test's own view of etcd (see node)
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	return newTestClusterOn(t, nil)
}

// newTestClusterOn is newTestCluster on the etcd cluster e (nil: a
// one-member etcd of its own).
func newTestClusterOn(t *testing.T, e *clustertest.Cluster) *testCluster {
	t.Helper()
	if testing.Short() || os.Getuid() != 0 {
		t.Skip("boots real sprites as root")
	}
	var ep string
	if e == nil {
		ep = clustertest.StartEtcd(t, t.TempDir())
	} else {
		ep = strings.Join(e.Endpoints(), ",")
	}
	be := s3mem.New()
	if err := be.CreateBucket("wisp"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(be).Server())
	t.Cleanup(srv.Close)
	// The daemons take their S3 credentials from the environment.
	t.Setenv("AWS_ACCESS_KEY_ID", "wisp-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wisp-test-secret")
	return &testCluster{etcd: ep, s3: srv.URL, be: be}
}

// host starts a wispd of the cluster with host id id, on a network of its
// own name and the cluster's shared address range.
func (c *testCluster) host(t *testing.T, backend, id string, args ...string) *daemon {
	t.Helper()
	return c.hostVia(t, c.etcd, backend, id, args...)
}

// hostVia is host reaching etcd at endpoint etcd (a proxy the test cuts).
func (c *testCluster) hostVia(t *testing.T, etcd, backend, id string, args ...string) *daemon {
	t.Helper()
	return newDaemon(t, backend, append([]string{"--cluster", "etcd=" + etcd, "--s3", c.s3, "--s3-bucket", "wisp",
		"--host-id", id, "--net-name", hostNetName(id)}, args...)...)
}

// hostNetName is host id's --net-name: its own, and its first four bytes
// (the prefix of its links on the host) its own too, so that a sprite
// that moves between two daemons of this one machine (same sprite id)
// does not meet the links the other daemon left for it.
func hostNetName(id string) string { return id[:1] + testNetName[2:] + id }

type hostJSON struct {
	ID       string `json:"id"`
	Sprites  int    `json:"sprites"`
	Draining bool   `json:"draining"`
}

type placedJSON struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Host       string `json:"host"`
	Generation uint64 `json:"generation"`
}

func (d *daemon) placed(name string) placedJSON {
	d.t.Helper()
	var p placedJSON
	if err := json.Unmarshal([]byte(d.ok("info", name, "--json")), &p); err != nil {
		d.t.Fatal(err)
	}
	return p
}

// seq reads the sprite's sequence file: the last number its writer wrote.
func (d *daemon) seq(name string) int {
	d.t.Helper()
	out := strings.TrimSpace(d.ok("exec", name, "--", "sh", "-c", "tail -n 1 /tmp/seq"))
	n, err := strconv.Atoi(out)
	if err != nil {
		d.t.Fatalf("sequence of %s: %q", name, out)
	}
	return n
}

// TestCluster: a sprite sleeps on host a and wakes on host b with its
// disk and its memory (a running process goes on counting where it
// was); requests to a reach it on b; hosts, info and list show where it
// is; a second move brings it back from a's warm copy.
func TestCluster(t *testing.T) {
	for _, b := range backends() {
		t.Run(b, func(t *testing.T) { testClusterMove(t, b) })
	}
}

func testClusterMove(t *testing.T, backend string) {
	c := newTestCluster(t)
	a := c.host(t, backend, "a")
	b := c.host(t, backend, "b")

	var hosts []hostJSON
	if err := json.Unmarshal([]byte(a.ok("hosts", "--json")), &hosts); err != nil || len(hosts) != 2 {
		t.Fatalf("wisp hosts: %v %+v", err, hosts)
	}
	a.ok("create", "m1", "--idle", "never")
	b.fails("unique across the cluster", "create", "m1")
	if p := a.placed("m1"); p.Host != "a" {
		t.Fatalf("m1 on %q, want a", p.Host)
	}
	a.ok("exec", "m1", "--", "sh", "-c", "echo kept > ~/file && sync")
	a.ok("exec", "m1", "--", "sh", "-c", "echo 0 > /tmp/seq; setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i >> /tmp/seq; sleep 0.05; done' </dev/null >/dev/null 2>&1 &")
	waitFor(t, time.Minute, "the writer counts", func() bool { return a.seq("m1") > 3 })
	before := a.seq("m1")

	t0 := time.Now()
	a.ok("move", "m1", "--to", "b")
	t.Logf("%s: move a -> b took %s", backend, time.Since(t0).Round(time.Millisecond))
	p := b.placed("m1")
	if p.Host != "b" || p.Generation != 1 || p.State != "sleeping" {
		t.Fatalf("after the move: %+v, want on b, generation 1, sleeping", p)
	}
	// Through a: forwarded to b, which wakes it.
	t0 = time.Now()
	if got := strings.TrimSpace(a.ok("exec", "m1", "--", "sh", "-c", "cat ~/file")); got != "kept" {
		t.Fatalf("file after the move: %q", got)
	}
	t.Logf("%s: wake on b to first exec (through a) %s", backend, time.Since(t0).Round(time.Millisecond))
	after := b.seq("m1")
	if after < before {
		t.Fatalf("the writer restarted: %d after the move, %d before", after, before)
	}
	waitFor(t, time.Minute, "the writer counts on b", func() bool { return b.seq("m1") > after })

	names := map[string]string{}
	for _, l := range []string{a.ok("list", "--json"), b.ok("list", "--json")} {
		var ps []placedJSON
		json.Unmarshal([]byte(l), &ps)
		for _, p := range ps {
			names[p.Name] = p.Host
		}
	}
	if names["m1"] != "b" {
		t.Fatalf("lists show m1 on %q, want b", names["m1"])
	}

	// Back to a: a's warm copy is of generation 1; generation 2 is new.
	b.ok("move", "m1", "--to", "a")
	if p := a.placed("m1"); p.Host != "a" || p.Generation != 2 {
		t.Fatalf("after the move back: %+v", p)
	}
	last := a.seq("m1")
	if last < after {
		t.Fatalf("the writer went back: %d, %d before", last, after)
	}
	if got := strings.TrimSpace(a.ok("exec", "m1", "--", "sh", "-c", "cat ~/file")); got != "kept" {
		t.Fatalf("file after the move back: %q", got)
	}

	// Destroyed through b: gone everywhere.
	b.ok("destroy", "m1")
	a.fails("not found", "info", "m1")
	b.fails("not found", "info", "m1")
	if _, err := os.Stat(filepath.Join(a.dir, "data")); err != nil {
		t.Fatal(err)
	}
}
