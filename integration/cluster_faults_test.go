package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"

	"github.com/wisp-sh/wisp/internal/blob"
	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/cluster/clustertest"
	"github.com/wisp-sh/wisp/internal/errdefs"
	"github.com/wisp-sh/wisp/internal/fleet"
)

// The failure cases of the cluster (issue 16): crashes mid-publish, a
// host cut off from etcd, two hosts racing for one sprite, a corrupted
// chunk, a host that cannot take a sprite's memory, drain, and daemon
// restarts (see oneBackend for which run on both backends).

// eachBackend runs test on every backend this host has, one subtest each.
func eachBackend(t *testing.T, test func(t *testing.T, backend string)) {
	for _, be := range backends() {
		t.Run(be, func(t *testing.T) { test(t, be) })
	}
}

// oneBackend runs test on one backend, gVisor where the host has it: for
// the cases where what is tested (publish, claim, fetch, sweep) does not
// differ by backend, and QEMU under TCG would only add minutes to make
// test (TestCluster, TestClusterNetworkCut, TestClusterIncompatible,
// TestClusterRestart and TestClusterDaemonDies run on both).
func oneBackend(t *testing.T, test func(t *testing.T, backend string)) {
	bs := backends()
	be := bs[len(bs)-1]
	t.Run(be, func(t *testing.T) { test(t, be) })
}

// node joins the test's etcd as a host with no API (placement never picks
// it): the test's own view of the cluster.
func (c *testCluster) node(t *testing.T, id string) *cluster.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := cluster.Join(ctx, cluster.Config{Endpoints: strings.Split(c.etcd, ","), Host: cluster.Host{ID: id}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// store is the cluster's object store, as a host sees it.
func (c *testCluster) store(t *testing.T) *blob.Store {
	t.Helper()
	b, err := blob.NewS3(blob.S3Config{Endpoint: c.s3, Bucket: "wisp", AccessKey: "wisp-test", SecretKey: "wisp-test-secret"})
	if err != nil {
		t.Fatal(err)
	}
	return blob.New(b, "", nil)
}

// sweep runs Fleet.Sweep with a grace of 0 (what a host's sweep loop does
// an hour later). Sweep reads only etcd and the store: no Manager here.
func (c *testCluster) sweep(t *testing.T, n *cluster.Node) blob.SweepStats {
	t.Helper()
	f, err := fleet.New(fleet.Config{DataDir: t.TempDir()}, nil, n, c.store(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Sweep(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// objects lists the keys in the bucket under prefix.
func (c *testCluster) objects(t *testing.T, prefix string) []string {
	t.Helper()
	res, err := c.be.ListBucket("wisp", &gofakes3.Prefix{HasPrefix: true, Prefix: prefix}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range res.Contents {
		keys = append(keys, o.Key)
	}
	return keys
}

// reached is every chunk key the manifests of sprite name list.
func reached(t *testing.T, s *blob.Store, name string, gens ...uint64) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, g := range gens {
		m, err := s.Manifest(context.Background(), name, g)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m.Files {
			for _, h := range f.Chunks {
				if h != "" {
					out["chunks/"+h[:2]+"/"+h] = true
				}
			}
		}
	}
	return out
}

// stop ends the daemon with SIGTERM, as a service manager does.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
}

// clusterDir is the daemon's cluster folder (owned claims, warm copies,
// transfers).
func (d *daemon) clusterDir() string { return filepath.Join(d.dir, "data", "pool", "cluster") }

// log returns what the daemon logged so far.
func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logf.Name())
	return string(b)
}

// published waits until sprite name is at rest, published at generation
// gen or later, and owned by no host, as etcd says (asking a host would
// bring the sprite there).
func (c *testCluster) published(t *testing.T, name string, gen uint64) cluster.Sprite {
	t.Helper()
	if c.observer == nil {
		c.observer = c.node(t, "observer")
	}
	var s cluster.Sprite
	waitFor(t, time.Minute, name+" published and released", func() bool {
		var err error
		s, err = c.observer.Get(context.Background(), name)
		return err == nil && s.Owner == "" && s.Head != nil && s.Head.Generation >= gen
	})
	return s
}

// TestClusterCrashMidPublish: host a is killed (-9) in the middle of a
// publish, after the chunks and after the manifest; host b then wakes the
// previous generation, whole; the next publish goes past the cut one's
// manifest; the sweep removes the cut publish's objects and keeps what the
// head needs.
func TestClusterCrashMidPublish(t *testing.T) {
	for _, point := range []string{"publish-after-chunks", "publish-after-manifest"} {
		t.Run(point, func(t *testing.T) {
			oneBackend(t, func(t *testing.T, be string) { testCrashMidPublish(t, be, point) })
		})
	}
}

func testCrashMidPublish(t *testing.T, be, point string) {
	c := newTestCluster(t)
	a := c.host(t, be, "a", "--cluster-ttl", "3s")
	b := c.host(t, be, "b", "--cluster-ttl", "3s")
	st := c.store(t)

	a.ok("create", "p1", "--idle", "never")
	a.ok("exec", "p1", "--", "sh", "-c", "echo one > ~/file && sync")
	a.ok("sleep", "p1")
	c.published(t, "p1", 1)
	// Woken on a (from its warm copy), changed, then a restarts with the
	// failpoint armed (a kill -9: the running sprite stays a's).
	a.ok("exec", "p1", "--", "sh", "-c", "echo two > ~/file && sync")
	a.env = []string{"WISP_FAILPOINT=" + point}
	a.kill9AndRestart()
	if p := a.placed("p1"); p.Host != "a" || p.State != "running" {
		t.Fatalf("after a's restart: %+v, want running on a", p)
	}
	a.wisp(nil, "sleep", "p1") // the publish that follows kills a
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the failpoint did not kill a")
	}
	if !strings.Contains(a.log(), "failpoint: killing the daemon") {
		t.Fatalf("a did not die at the failpoint:\n%s", a.log())
	}
	gens, err := st.Generations(context.Background(), "p1")
	if err != nil {
		t.Fatal(err)
	}
	want := []uint64{1}
	if point == "publish-after-manifest" {
		want = []uint64{1, 2}
	}
	if !slices.Equal(gens, want) {
		t.Fatalf("manifests of p1 after the crash: %v, want %v", gens, want)
	}
	chunks := c.objects(t, "chunks/")
	head := reached(t, st, "p1", 1)
	orphans := 0
	for _, k := range chunks {
		if !head[k] {
			orphans++
		}
	}
	if orphans == 0 {
		t.Fatalf("no chunk of the cut publish in the store (%d chunks)", len(chunks))
	}

	// b takes it once a's lease ends: generation 1, whole.
	t0 := time.Now()
	var out string
	waitFor(t, time.Minute, "b to wake p1", func() bool {
		o, _, code := b.wisp(nil, "exec", "p1", "--", "sh", "-c", "cat ~/file")
		out = o
		return code == 0
	})
	t.Logf("%s: b woke p1 %s after a died", point, time.Since(t0).Round(time.Millisecond))
	if got := strings.TrimSpace(out); got != "one" {
		t.Fatalf("p1's file on b: %q, want the last publish's %q", got, "one")
	}
	if p := b.placed("p1"); p.Host != "b" || p.Generation != 1 {
		t.Fatalf("p1 on b: %+v, want generation 1", p)
	}
	// b publishes it: past the manifest the cut publish left, if any.
	b.ok("exec", "p1", "--", "sh", "-c", "echo three > ~/file && sync")
	b.ok("sleep", "p1")
	p := c.published(t, "p1", 2).Head
	t.Logf("%s: b published generation %d", point, p.Generation)

	// The sweep keeps the head's manifest and chunks only.
	sw := c.sweep(t, c.observer)
	t.Logf("%s: sweep %+v", point, sw)
	if gens, _ := st.Generations(context.Background(), "p1"); !slices.Equal(gens, []uint64{p.Generation}) {
		t.Fatalf("manifests after the sweep: %v, want [%d]", gens, p.Generation)
	}
	head = reached(t, st, "p1", p.Generation)
	for _, k := range c.objects(t, "chunks/") {
		if !head[k] {
			t.Errorf("chunk %s outlived the sweep; no head reaches it", k)
		}
	}
	for k := range head {
		if !slices.Contains(c.objects(t, k), k) {
			t.Errorf("the head's chunk %s was swept", k)
		}
	}

	// a comes back (no failpoint): its copy is stale and goes; a fetches
	// the head from the store.
	a.env = nil
	a.start()
	b.ok("move", "p1", "--to", "a")
	if got := strings.TrimSpace(a.ok("exec", "p1", "--", "sh", "-c", "cat ~/file")); got != "three" {
		t.Fatalf("p1's file on a after the sweep: %q, want three", got)
	}
}

// TestClusterCrashMidPublishRestart: host a, killed between the manifest
// and the etcd transaction, starts again at once: it publishes the sprite
// it had put to sleep (past the cut publish's manifest) and lets it go;
// b then wakes the newest state.
func TestClusterCrashMidPublishRestart(t *testing.T) {
	oneBackend(t, testCrashMidPublishRestart)
}

func testCrashMidPublishRestart(t *testing.T, be string) {
	c := newTestCluster(t)
	a := c.host(t, be, "a", "--cluster-ttl", "3s")
	b := c.host(t, be, "b", "--cluster-ttl", "3s")
	a.ok("create", "p1", "--idle", "never")
	a.ok("exec", "p1", "--", "sh", "-c", "echo one > ~/file && sync")
	a.ok("sleep", "p1")
	c.published(t, "p1", 1)
	a.ok("exec", "p1", "--", "sh", "-c", "echo two > ~/file && sync")
	a.env = []string{"WISP_FAILPOINT=publish-after-manifest"}
	a.kill9AndRestart()
	a.wisp(nil, "sleep", "p1") // the publish that follows kills a
	a.cmd.Wait()
	a.env = nil
	a.start()
	s := c.published(t, "p1", 3)
	if s.Head.Host != "a" || s.Head.Generation != 3 {
		t.Fatalf("p1 after a's restart: %+v, want generation 3 published by a", s.Head)
	}
	b.ok("move", "p1", "--to", "b")
	if got := strings.TrimSpace(b.ok("exec", "p1", "--", "sh", "-c", "cat ~/file")); got != "two" {
		t.Fatalf("p1's file on b: %q, want two", got)
	}
}

// TestClusterLeaderChange: etcd's leader is killed as a sprite is put to
// sleep (its publish under way): the publish still lands, and b wakes the
// sprite with its files.
func TestClusterLeaderChange(t *testing.T) {
	if !slices.Contains(backends(), "gvisor") {
		t.Skip("needs gVisor")
	}
	if testing.Short() || os.Getuid() != 0 {
		t.Skip("boots real sprites as root")
	}
	e := clustertest.StartEtcdCluster(t, 3)
	c := newTestClusterOn(t, e)
	a := c.host(t, "gvisor", "a")
	b := c.host(t, "gvisor", "b")
	c.observer = c.node(t, "observer")
	a.ok("create", "e1", "--idle", "never")
	a.ok("exec", "e1", "--", "sh", "-c", "echo kept > ~/file && sync")
	leader := e.Leader()
	a.ok("sleep", "e1")
	e.Members[leader].Kill() // of three: the other two elect a leader
	t0 := time.Now()
	c.published(t, "e1", 1)
	t.Logf("published %s after the leader (member %d) was killed", time.Since(t0).Round(time.Millisecond), leader)
	a.ok("move", "e1", "--to", "b")
	if got := strings.TrimSpace(b.ok("exec", "e1", "--", "sh", "-c", "cat ~/file")); got != "kept" {
		t.Fatalf("e1's file on b: %q, want kept", got)
	}
}

// TestClusterNetworkCut: host a loses etcd (its connection is cut); it
// stops its sprites' VMs before b can claim one; b wakes the last
// publish; a's late writes are refused; a comes back without the sprite b
// took, and with the one nobody could take (never published), stopped.
func TestClusterNetworkCut(t *testing.T) { eachBackend(t, testClusterNetworkCut) }

func testClusterNetworkCut(t *testing.T, be string) {
	c := newTestCluster(t)
	px := clustertest.NewProxy(t, strings.TrimPrefix(c.etcd, "http://"))
	a := c.hostVia(t, px.Endpoint(), be, "a", "--cluster-ttl", "3s")
	b := c.host(t, be, "b", "--cluster-ttl", "3s")
	n := c.node(t, "observer")
	c.observer = n
	ctx := context.Background()

	a.ok("create", "n1", "--idle", "never")
	a.ok("exec", "n1", "--", "sh", "-c", "echo one > ~/file && sync")
	a.ok("sleep", "n1")
	c.published(t, "n1", 1)
	a.ok("exec", "n1", "--", "sh", "-c", "echo two > ~/file && sync")
	s, err := n.Get(ctx, "n1")
	if err != nil || s.Owner != "a" {
		t.Fatalf("n1 before the cut: %+v, %v", s, err)
	}
	// n2 was never published: no other host can take it over.
	a.ok("create", "n2", "--idle", "never")
	a.ok("exec", "n2", "--", "sh", "-c", "echo mine > ~/file && sync")
	pid := a.info("n1").Pid
	if pid <= 0 || !alive(pid) {
		t.Fatalf("n1's VM pid %d is not running", pid)
	}

	// Watch a's VM and the owner key, 10 ms apart.
	const poll = 10 * time.Millisecond
	var mu sync.Mutex
	var vmGone, claimed time.Time
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(poll):
			}
			now := time.Now()
			mu.Lock()
			if vmGone.IsZero() && !alive(pid) {
				vmGone = now
			}
			mu.Unlock()
			if s, err := n.Get(ctx, "n1"); err == nil && s.Owner == "b" {
				mu.Lock()
				if claimed.IsZero() {
					claimed = now
				}
				mu.Unlock()
			}
		}
	}()
	cut := time.Now()
	px.Cut()
	var out string
	waitFor(t, time.Minute, "b to wake n1", func() bool {
		o, _, code := b.wisp(nil, "exec", "n1", "--", "sh", "-c", "cat ~/file")
		out = o
		return code == 0
	})
	waitFor(t, 10*time.Second, "the observer to see b's claim", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !claimed.IsZero()
	})
	mu.Lock()
	gone, got := vmGone, claimed
	mu.Unlock()
	if gone.IsZero() {
		t.Fatal("a's VM still runs after b claimed n1")
	}
	t.Logf("cut at 0: a's VM gone at %v, b's claim seen at %v", gone.Sub(cut).Round(time.Millisecond), got.Sub(cut).Round(time.Millisecond))
	if !gone.Before(got.Add(-poll)) {
		t.Fatalf("a's VM ended at %v, not before b's claim at %v", gone.Sub(cut), got.Sub(cut))
	}
	if strings.TrimSpace(out) != "one" {
		t.Fatalf("n1's file on b: %q, want the last publish's one", out)
	}
	if !strings.Contains(a.log(), "cluster lease lost") {
		t.Fatal("a did not log its lost lease")
	}
	for _, l := range strings.Split(a.log(), "\n") {
		if strings.Contains(l, "lease") || strings.Contains(l, "keep-alive") || strings.Contains(l, "fence") || strings.Contains(l, "sprite stopped") {
			t.Logf("a: %s", l)
		}
	}
	t.Logf("cut at %s", cut.UTC().Format("15:04:05.000"))

	// a's late writes: the generation it would publish is taken (the
	// conditional PUT refuses it) once b publishes, and its fence is void.
	b.ok("sleep", "n1")
	p := c.published(t, "n1", 2).Head
	late := filepath.Join(t.TempDir(), "late")
	os.WriteFile(late, []byte("late"), 0o600)
	if _, _, err := c.store(t).Publish(ctx, "n1", p.Generation, "a", []blob.File{{Name: "disk.img", Path: late}}, nil, nil); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("a late manifest of generation %d: %v, want a conflict", p.Generation, err)
	}
	px.Heal()
	waitFor(t, time.Minute, "a to join again", func() bool {
		var hosts []hostJSON
		json.Unmarshal([]byte(b.ok("hosts", "--json")), &hosts)
		return len(hosts) == 3
	})
	s, err = n.Get(ctx, "n1")
	if err != nil || s.Head == nil || s.Head.Generation != p.Generation || s.Head.Host != "b" {
		t.Fatalf("n1 after a came back: %+v %+v, %v", s, s.Head, err)
	}
	if got := strings.TrimSpace(a.ok("exec", "n1", "--", "sh", "-c", "cat ~/file")); got != "one" {
		t.Fatalf("n1 through a: %q", got)
	}
	if p := a.placed("n1"); p.Host != "b" {
		t.Fatalf("n1 after a came back: on %q, want b", p.Host)
	}
	// n2, which no other host could take, is kept: stopped, saying why,
	// published once a is back (so at rest, on no host: a look at it does
	// not move it); its files are intact.
	c.published(t, "n2", 1)
	var info struct {
		State      string `json:"state"`
		LastError  string `json:"last_error"`
		Host       string `json:"host"`
		Generation uint64 `json:"generation"`
	}
	json.Unmarshal([]byte(a.ok("info", "n2", "--json")), &info)
	if info.Host != "" || info.Generation != 1 || info.State != "stopped" || !strings.Contains(info.LastError, "lost its cluster lease") {
		t.Fatalf("n2 after a came back: %+v, want stopped at rest (generation 1), saying why", info)
	}
	if got := strings.TrimSpace(a.ok("exec", "n2", "--", "sh", "-c", "cat ~/file")); got != "mine" {
		t.Fatalf("n2's file: %q", got)
	}
	if left, _ := filepath.Glob(filepath.Join(a.clusterDir(), "lost", "*")); len(left) != 0 {
		t.Fatalf("a kept aside copies after it came back: %v", left)
	}
}

// TestClusterRace: two hosts wake the same sprite at rest at once (its
// last host is gone), for three sprites in turn: each time exactly one
// claims and fetches it, the other forwards, and both execs succeed.
func TestClusterRace(t *testing.T) { oneBackend(t, testClusterRace) }

func testClusterRace(t *testing.T, be string) {
	c := newTestCluster(t)
	a := c.host(t, be, "a")
	b := c.host(t, be, "b")
	h := c.host(t, be, "c")
	names := []string{"r1", "r2", "r3"}
	for _, name := range names {
		h.ok("create", name, "--idle", "never")
		h.ok("exec", name, "--", "sh", "-c", "echo "+name+" > ~/file && sync")
		h.ok("sleep", name)
		c.published(t, name, 1)
	}
	h.stop() // their last host leaves: a and b both may take them

	for _, name := range names {
		var wg sync.WaitGroup
		outs, errs, codes := make([]string, 2), make([]string, 2), make([]int, 2)
		start := make(chan struct{})
		for i, d := range []*daemon{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				outs[i], errs[i], codes[i] = d.wisp(nil, "exec", name, "--", "sh", "-c", "cat ~/file")
			}()
		}
		close(start)
		wg.Wait()
		for i, id := range []string{"a", "b"} {
			if codes[i] != 0 || strings.TrimSpace(outs[i]) != name {
				t.Errorf("%s: exec on %s: exit %d, %q, stderr %q", name, id, codes[i], outs[i], errs[i])
			}
		}
		fetched := 0
		var winner string
		for id, d := range map[string]*daemon{"a": a, "b": b} {
			if strings.Contains(d.log(), `msg="sprite fetched" sprite=`+name+" ") {
				fetched++
				winner = id
			}
		}
		if fetched != 1 {
			t.Fatalf("%s fetched by %d hosts, want 1", name, fetched)
		}
		s, err := c.observer.Get(context.Background(), name)
		if err != nil || s.Owner != winner {
			t.Fatalf("%s: owner %q (%v), want %s", name, s.Owner, err, winner)
		}
		t.Logf("%s claimed %s", winner, name)
	}
}

// TestClusterCorruptChunk: a chunk of a published sprite is damaged in
// the store: the fetch on b is refused with a clear error, the claim is
// released and b keeps nothing of it; repaired, the move goes through.
func TestClusterCorruptChunk(t *testing.T) { oneBackend(t, testClusterCorruptChunk) }

func testClusterCorruptChunk(t *testing.T, be string) {
	c := newTestCluster(t)
	a := c.host(t, be, "a")
	b := c.host(t, be, "b")
	n := c.node(t, "observer")
	c.observer = n
	ctx := context.Background()

	a.ok("create", "k1", "--idle", "never")
	a.ok("exec", "k1", "--", "sh", "-c", "echo kept > ~/file && sync")
	a.ok("sleep", "k1")
	c.published(t, "k1", 1)

	// A chunk of its memory (the disk's may come from b's base image).
	m, err := c.store(t).Manifest(ctx, "k1", 1)
	if err != nil {
		t.Fatal(err)
	}
	var key string
	for _, f := range m.Files {
		if f.Name == "disk.img" {
			continue
		}
		for _, h := range f.Chunks {
			if h != "" && key == "" {
				key = "chunks/" + h[:2] + "/" + h
			}
		}
	}
	if key == "" {
		t.Fatalf("no memory chunk in %+v", m.Files)
	}
	obj, err := c.be.GetObject("wisp", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := io.ReadAll(obj.Contents)
	obj.Contents.Close()
	bad := bytes.Repeat([]byte{0x5a}, len(good))
	if _, err := c.be.PutObject("wisp", key, map[string]string{}, bytes.NewReader(bad), int64(len(bad)), nil); err != nil {
		t.Fatal(err)
	}

	a.fails("is corrupt in the store", "move", "k1", "--to", "b")
	s, err := n.Get(ctx, "k1")
	if err != nil || s.Owner != "" || s.Head == nil || s.Head.Generation != 1 {
		t.Fatalf("k1 after the refused fetch: %+v, %v; want at rest, unowned, generation 1", s, err)
	}
	if left, _ := filepath.Glob(filepath.Join(b.clusterDir(), "incoming", "*")); len(left) != 0 {
		t.Fatalf("b kept a half-made fetch: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(b.clusterDir(), "parked", "k1*")); len(left) != 0 {
		t.Fatalf("b kept files of k1: %v", left)
	}
	var owned map[string]any
	if raw, err := os.ReadFile(filepath.Join(b.clusterDir(), "owned.json")); err == nil {
		json.Unmarshal(raw, &owned)
	}
	if _, ok := owned["k1"]; ok {
		t.Fatalf("b still records a claim on k1: %v", owned)
	}

	// Repaired: the same move goes through.
	if _, err := c.be.PutObject("wisp", key, map[string]string{}, bytes.NewReader(good), int64(len(good)), nil); err != nil {
		t.Fatal(err)
	}
	a.ok("move", "k1", "--to", "b")
	if got := strings.TrimSpace(b.ok("exec", "k1", "--", "sh", "-c", "cat ~/file")); got != "kept" {
		t.Fatalf("k1's file on b: %q", got)
	}
}

// TestClusterIncompatible: host b advertises another CPU class
// (--cpu-class): a gVisor sprite (or a QEMU one under KVM with -cpu host)
// moved there cannot take its memory; it lands stopped, says why, and its
// disk boots cold with its files. A QEMU sprite under TCG takes its
// memory along: TCG's CPU (max) is the same on every host of one QEMU
// version, whatever the host's own.
func TestClusterIncompatible(t *testing.T) {
	for _, be := range backends() {
		t.Run(be, func(t *testing.T) {
			c := newTestCluster(t)
			a := c.host(t, be, "a")
			b := c.host(t, be, "b", "--cpu-class", "another-cpu")
			a.ok("create", "x1", "--idle", "never")
			a.ok("exec", "x1", "--", "sh", "-c", "echo kept > ~/file && sync")
			// A process that lives in its memory only.
			a.ok("exec", "x1", "--", "sh", "-c", "setsid sleep 10007 </dev/null >/dev/null 2>&1 &")
			tcg := a.info("x1").Accel == "tcg"
			a.ok("move", "x1", "--to", "b")
			if be == "qemu" && tcg {
				if got := strings.TrimSpace(b.ok("exec", "x1", "--", "sh", "-c", "cat ~/file; grep -l '1000[7]' /proc/[0-9]*/cmdline >/dev/null 2>&1 && echo warm || echo cold")); got != "kept\nwarm" {
					t.Fatalf("x1 (QEMU under TCG) on b: %q, want its file and its memory", got)
				}
				return
			}
			var info struct {
				spriteJSON
				LastError string `json:"last_error"`
				Host      string `json:"host"`
			}
			if err := json.Unmarshal([]byte(b.ok("info", "x1", "--json")), &info); err != nil {
				t.Fatal(err)
			}
			if info.Host != "b" || info.State != "stopped" || !strings.Contains(info.LastError, "without its memory") || !strings.Contains(info.LastError, "another-cpu") {
				t.Fatalf("x1 on b: host %q, state %q, last error %q; want stopped on b, saying why", info.Host, info.State, info.LastError)
			}
			if txt := b.ok("info", "x1"); !strings.Contains(txt, "without its memory") {
				t.Errorf("wisp info does not say why:\n%s", txt)
			}
			if got := strings.TrimSpace(b.ok("exec", "x1", "--", "sh", "-c", "cat ~/file; grep -l '1000[7]' /proc/[0-9]*/cmdline >/dev/null 2>&1 && echo warm || echo cold")); got != "kept\ncold" {
				t.Fatalf("x1 on b: %q, want its file and a cold boot", got)
			}
		})
	}
}

// TestClusterDrain: `wisp drain a` hands every sprite of a to b, running
// or asleep, files kept; `wisp hosts` shows a draining, and a sprite at
// rest whose last host is a wakes elsewhere.
func TestClusterDrain(t *testing.T) { oneBackend(t, testClusterDrain) }

func testClusterDrain(t *testing.T, be string) {
	c := newTestCluster(t)
	a := c.host(t, be, "a")
	b := c.host(t, be, "b")
	for _, name := range []string{"d1", "d2", "d3", "d4"} {
		a.ok("create", name, "--idle", "never")
		a.ok("exec", name, "--", "sh", "-c", "echo "+name+" > ~/file && sync")
	}
	a.ok("stop", "d3")
	a.ok("sleep", "d4")
	c.published(t, "d4", 1)
	out := a.ok("drain", "a")
	t.Logf("drain: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "d1") || !strings.Contains(out, "d2") {
		t.Fatalf("drain moved %q, want d1 and d2 (running on a)", out)
	}
	var hosts []hostJSON
	if err := json.Unmarshal([]byte(b.ok("hosts", "--json")), &hosts); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.ID == "a" && (!h.Draining || h.Sprites != 0) {
			t.Fatalf("a after its drain: %+v, want draining with no sprite", h)
		}
	}
	for _, name := range []string{"d1", "d2"} {
		if p := b.placed(name); p.Host != "b" || p.Generation != 1 {
			t.Fatalf("%s after the drain: %+v, want on b", name, p)
		}
	}
	for _, name := range []string{"d1", "d2", "d3", "d4"} {
		if got := strings.TrimSpace(a.ok("exec", name, "--", "sh", "-c", "cat ~/file")); got != name {
			t.Fatalf("%s's file: %q", name, got)
		}
		if p := a.placed(name); p.Host != "b" {
			t.Fatalf("%s woke on %q, want b (a drains)", name, p.Host)
		}
	}
}

// TestClusterRestart: a daemon restarted (SIGTERM, then started again on
// its data dir) keeps its sprites, a running process asleep across it; a
// kill -9 and a restart within the lease keep a running sprite running.
func TestClusterRestart(t *testing.T) { eachBackend(t, testClusterRestart) }

func testClusterRestart(t *testing.T, be string) {
	c := newTestCluster(t)
	a := c.host(t, be, "a")
	a.ok("create", "s1", "--idle", "never")
	a.ok("exec", "s1", "--", "sh", "-c", "echo kept > ~/file && sync")
	a.ok("exec", "s1", "--", "sh", "-c", "echo 0 > /tmp/seq; setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i >> /tmp/seq; sleep 0.05; done' </dev/null >/dev/null 2>&1 &")
	waitFor(t, time.Minute, "the writer counts", func() bool { return a.seq("s1") > 3 })

	a.stop()
	for _, l := range strings.Split(a.log(), "\n") {
		if strings.Contains(l, "publish") || strings.Contains(l, "shutting") || strings.Contains(l, "cluster: left") || strings.Contains(l, "fenc") {
			t.Logf("a: %s", l)
		}
	}
	a.start()
	before := 0
	if p := a.placed("s1"); p.Generation < 1 || p.State != "sleeping" {
		t.Fatalf("s1 after a restart: %+v, want published asleep", p)
	}
	if got := strings.TrimSpace(a.ok("exec", "s1", "--", "sh", "-c", "cat ~/file")); got != "kept" {
		t.Fatalf("file after a restart: %q", got)
	}
	before = a.seq("s1")
	waitFor(t, time.Minute, "the writer counts on after the restart", func() bool { return a.seq("s1") > before })

	pid := a.info("s1").Pid
	gen := a.placed("s1").Generation
	a.kill9AndRestart()
	p := a.placed("s1")
	if p.Host != "a" || p.State != "running" || p.Generation != gen {
		t.Fatalf("s1 after kill -9: %+v, want running on a at generation %d", p, gen)
	}
	if got := a.info("s1").Pid; got != pid {
		t.Fatalf("s1's VM pid %d after kill -9, was %d", got, pid)
	}
	mid := a.seq("s1")
	waitFor(t, time.Minute, "the writer counts on after kill -9", func() bool { return a.seq("s1") > mid })
	if mid < before {
		t.Fatalf("the writer restarted: %d, %d before", mid, before)
	}
}

// TestClusterDaemonDies: host a's daemon is killed (kill -9) and not
// restarted while its sprite runs. Its fence watchdog, a process of its
// own, stops the sprite's VM before a's lease expires, so before host b
// can claim the sprite and wake its last publish: never two copies
// running at once.
func TestClusterDaemonDies(t *testing.T) { eachBackend(t, testClusterDaemonDies) }

func testClusterDaemonDies(t *testing.T, be string) {
	c := newTestCluster(t)
	a := c.host(t, be, "a", "--cluster-ttl", "3s")
	b := c.host(t, be, "b", "--cluster-ttl", "3s")
	n := c.node(t, "observer")
	c.observer = n
	ctx := context.Background()

	a.ok("create", "k1", "--idle", "never")
	a.ok("exec", "k1", "--", "sh", "-c", "echo one > ~/file && sync")
	a.ok("sleep", "k1")
	c.published(t, "k1", 1)
	a.ok("exec", "k1", "--", "true") // running again on a, owned by a
	pid := a.info("k1").Pid
	if pid <= 0 || !alive(pid) {
		t.Fatalf("k1's VM pid %d is not running", pid)
	}
	// Whatever happens below, a runs again for the harness's cleanup
	// (which destroys through it), and no VM of this test outlives it.
	t.Cleanup(func() {
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			a.start()
		}
	})
	killed := time.Now()
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()

	var vmGone, claimable time.Time
	waitFor(t, time.Minute, "a's VM stopped by the fence watchdog and its claim expired", func() bool {
		now := time.Now()
		if vmGone.IsZero() && !alive(pid) {
			vmGone = now
		}
		if s, err := n.Get(ctx, "k1"); claimable.IsZero() && err == nil && s.Owner == "" {
			claimable = now
		}
		return !vmGone.IsZero() && !claimable.IsZero()
	})
	t.Logf("%s: after kill -9 of a's daemon: VM gone at %s, claim free at %s", be,
		vmGone.Sub(killed).Round(time.Millisecond), claimable.Sub(killed).Round(time.Millisecond))
	if !vmGone.Before(claimable) {
		t.Fatalf("a's VM was still running when its claim expired (VM gone %s after, claim free %s after)",
			vmGone.Sub(killed), claimable.Sub(killed))
	}
	if got := strings.TrimSpace(b.ok("exec", "k1", "--", "sh", "-c", "cat ~/file")); got != "one" {
		t.Fatalf("k1 on b: %q, want its last publish", got)
	}
	if log, _ := os.ReadFile(filepath.Join(a.clusterDir(), "watchdog.log")); !strings.Contains(string(log), "sprites were killed") {
		t.Errorf("watchdog log: %s", log)
	}
	a.start()
	restarted = true
}
