package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wisp-sh/wisp/internal/cluster"
	"github.com/wisp-sh/wisp/internal/cluster/clustertest"
	"github.com/wisp-sh/wisp/internal/errdefs"
)

// join joins a Node that the test closes at its end.
func join(t testing.TB, eps []string, id string, mod ...func(*cluster.Config)) *cluster.Node {
	t.Helper()
	cfg := cluster.Config{
		Endpoints: eps,
		Host:      cluster.Host{ID: id, API: "http://" + id + ".test:7070", CPUs: 2},
		TTL:       3 * time.Second,
		Margin:    time.Second,
		Log:       testLog(t),
	}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := cluster.Join(ctx, cfg)
	if err != nil {
		t.Fatalf("join %s: %v", id, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func head(gen uint64) cluster.Head {
	return cluster.Head{Generation: gen, Manifest: fmt.Sprintf("manifests/x/%d", gen), Backend: "qemu", State: cluster.StateSleeping,
		Compat: map[string]string{"cpu": "x86-64-v2"}}
}

// publish creates name on n, publishes generation 1 and releases it.
func publish(t testing.TB, n *cluster.Node, name string) {
	t.Helper()
	ctx := ctxT(t)
	f, err := n.Create(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.SetHead(ctx, name, f, head(1)); err != nil {
		t.Fatal(err)
	}
	if err := n.Release(ctx, name, f); err != nil {
		t.Fatal(err)
	}
}

func TestMembership(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	ctx := ctxT(t)
	a := join(t, []string{ep}, "a")
	b := join(t, []string{ep}, "b")
	hosts, err := a.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].ID != "a" || hosts[1].ID != "b" || hosts[1].API != "http://b.test:7070" || hosts[0].Started.IsZero() {
		t.Fatalf("hosts = %+v, want a and b", hosts)
	}

	// An etcd that does not answer is ErrUnavailable, within the bounds.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	t0 := time.Now()
	_, err = cluster.Join(ctx, cluster.Config{Endpoints: []string{"http://" + dead.Addr().String()}, Host: cluster.Host{ID: "z"},
		DialTimeout: time.Second, RequestTimeout: time.Second})
	if !errors.Is(err, errdefs.ErrUnavailable) || time.Since(t0) > 5*time.Second {
		t.Fatalf("join with etcd down: %v after %v", err, time.Since(t0))
	}
	t.Logf("etcd down: %v", err)

	// A second live host with the same id is refused.
	_, err = cluster.Join(ctx, cluster.Config{Endpoints: []string{ep}, Host: cluster.Host{ID: "a"}, TTL: 3 * time.Second})
	if !errors.Is(err, cluster.ErrConflict) || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("duplicate join: %v, want a conflict", err)
	}

	if err := b.SetHost(ctx, cluster.Host{API: "http://b.test:7070", Draining: true}); err != nil {
		t.Fatal(err)
	}
	hosts, _ = a.Hosts(ctx)
	if !hosts[1].Draining || hosts[1].Started.IsZero() {
		t.Fatalf("b after SetHost: %+v", hosts[1])
	}
	if err := b.SetHost(ctx, cluster.Host{ID: "a"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("SetHost of another id: %v", err)
	}

	// Close revokes the lease: b is gone at once, and its id is free again.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	hosts, _ = a.Hosts(ctx)
	if len(hosts) != 1 || hosts[0].ID != "a" {
		t.Fatalf("hosts after b left = %+v", hosts)
	}
	join(t, []string{ep}, "b")
}

func TestSpriteLifecycle(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	ctx := ctxT(t)
	a := join(t, []string{ep}, "a")
	b := join(t, []string{ep}, "b")

	if _, err := b.Claim(ctx, "x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("claim of a sprite nobody made: %v", err)
	}
	if _, err := a.Get(ctx, "x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get of a sprite nobody made: %v", err)
	}
	if _, err := a.Create(ctx, "bad/name"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("create bad/name: %v", err)
	}

	f1, err := a.Create(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	// The name is taken, for both hosts.
	for _, n := range []*cluster.Node{a, b} {
		_, err := n.Create(ctx, "x")
		var held *cluster.HeldError
		if !errors.Is(err, cluster.ErrConflict) || !errors.Is(err, errdefs.ErrExists) || !errors.As(err, &held) || held.Host != "a" || held.Fence != f1 {
			t.Fatalf("second create on %s: %v", n.ID(), err)
		}
		t.Logf("second create: %v", err)
	}
	s, err := b.Get(ctx, "x")
	if err != nil || s.Owner != "a" || s.Fence != f1 || s.Head != nil {
		t.Fatalf("get after create = %+v, %v", s, err)
	}
	if err := a.Release(ctx, "x", f1); !errors.Is(err, errdefs.ErrState) || errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("release before any head: %v, want a refusal", err)
	}
	if err := a.SetHead(ctx, "x", f1, cluster.Head{State: "running"}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("head in state running: %v", err)
	}
	if err := a.SetHead(ctx, "x", f1, head(1)); err != nil {
		t.Fatal(err)
	}
	if owned, err := a.Owned(ctx); err != nil || len(owned) != 1 || owned[0] != "x" {
		t.Fatalf("a owns %v, %v", owned, err)
	}
	if _, err := b.Claim(ctx, "x"); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("claim of a held sprite: %v", err)
	}
	if err := b.SetHead(ctx, "x", f1, head(9)); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("b publishing under a's fence: %v", err)
	}
	if err := a.Release(ctx, "x", f1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, "x"); !errors.Is(err, errdefs.ErrExists) || !strings.Contains(err.Error(), "at rest") {
		t.Fatalf("create of a sprite at rest: %v", err)
	}

	// Another host claims it: a higher fence, and a's old fence is void.
	f2, err := b.Claim(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if f2 <= f1 {
		t.Fatalf("fence after release and claim %d, not above %d", f2, f1)
	}
	err = a.SetHead(ctx, "x", f1, head(7))
	if !errors.Is(err, cluster.ErrConflict) || !strings.Contains(err.Error(), "fenced: owner changed") {
		t.Fatalf("set head on a stale fence: %v", err)
	}
	t.Logf("stale fence: %v", err)
	if err := a.Release(ctx, "x", f1); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("release on a stale fence: %v", err)
	}
	if err := a.Delete(ctx, "x", f1); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("delete on a stale fence: %v", err)
	}
	if err := b.SetHead(ctx, "x", f2, head(2)); err != nil {
		t.Fatal(err)
	}
	s, err = a.Get(ctx, "x")
	if err != nil || s.Owner != "b" || s.Fence != f2 || s.Head == nil || s.Head.Generation != 2 || s.Head.Host != "b" || s.Head.Compat["cpu"] != "x86-64-v2" {
		t.Fatalf("get = %+v %+v, %v", s, s.Head, err)
	}

	publish(t, a, "y")
	list, err := a.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "x" || list[1].Name != "y" || list[1].Owner != "" || list[1].Head.Generation != 1 {
		t.Fatalf("list = %+v, %v", list, err)
	}

	if err := b.Delete(ctx, "x", f2); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, "x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	// Close drops the owner keys with the lease: the sprite is at rest.
	fy, err := b.Claim(ctx, "y")
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if s, err := a.Get(ctx, "y"); err != nil || s.Owner != "" || s.Head == nil {
		t.Fatalf("y after its owner left: %+v, %v", s, err)
	}
	if err := b.SetHead(ctx, "y", fy, head(3)); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("set head after close: %v", err)
	}
}

func TestWatch(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	a := join(t, []string{ep}, "a")
	ctx, cancel := context.WithCancel(context.Background())
	names := make(chan string, 100)
	done := make(chan error, 1)
	go func() { done <- a.Watch(ctx, func(name string) { names <- name }) }()
	// The watch may start after the first change: publish until one is seen.
	waitFor(t, 10*time.Second, "a watch event", func() bool {
		publish(t, a, fmt.Sprintf("w%d", time.Now().UnixNano()))
		select {
		case name := <-names:
			return strings.HasPrefix(name, "w")
		case <-time.After(500 * time.Millisecond):
			return false
		}
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("watch returned %v", err)
	}

	// Another host's changes are seen too, and Close ends a Watch.
	b := join(t, []string{ep}, "b")
	go func() { done <- a.Watch(context.Background(), func(name string) { names <- name }) }()
	waitFor(t, 10*time.Second, "b's change seen by a", func() bool {
		publish(t, b, fmt.Sprintf("v%d", time.Now().UnixNano()))
		for {
			select {
			case name := <-names:
				if strings.HasPrefix(name, "v") {
					return true
				}
			case <-time.After(500 * time.Millisecond):
				return false
			}
		}
	})
	a.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch ended by Close returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end Watch")
	}
}

func TestClaimRace(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	nodes := []*cluster.Node{join(t, []string{ep}, "a"), join(t, []string{ep}, "b"), join(t, []string{ep}, "c")}
	publish(t, nodes[0], "r")
	const perNode = 8
	for round := range 5 {
		var wg sync.WaitGroup
		start := make(chan struct{})
		type win struct {
			node *cluster.Node
			f    cluster.Fence
		}
		wins := make(chan win, len(nodes)*perNode)
		errs := make(chan error, len(nodes)*perNode)
		for _, n := range nodes {
			for range perNode {
				wg.Go(func() {
					<-start
					f, err := n.Claim(context.Background(), "r")
					if err != nil {
						errs <- err
						return
					}
					wins <- win{n, f}
				})
			}
		}
		close(start)
		wg.Wait()
		close(wins)
		close(errs)
		var ws []win
		for w := range wins {
			ws = append(ws, w)
		}
		for err := range errs {
			var held *cluster.HeldError
			if !errors.As(err, &held) {
				t.Errorf("round %d: a losing claim failed with %v, want a HeldError", round, err)
			}
		}
		if len(ws) != 1 {
			t.Fatalf("round %d: %d claims won, want exactly 1", round, len(ws))
		}
		w := ws[0]
		t.Logf("round %d: %s won with fence %d", round, w.node.ID(), w.f)
		if err := w.node.SetHead(context.Background(), "r", w.f, head(uint64(round+2))); err != nil {
			t.Fatal(err)
		}
		if err := w.node.Release(context.Background(), "r", w.f); err != nil {
			t.Fatal(err)
		}
	}
}

// A host cut off from etcd stops its sprites (OnLost) before any other host
// can claim them, its late writes are rejected, and it registers again when
// etcd is back.
func TestSelfFence(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	ctx := ctxT(t)
	p := clustertest.NewProxy(t, strings.TrimPrefix(ep, "http://"))
	const ttl, margin = 3 * time.Second, time.Second
	var lostMu sync.Mutex
	var lostAt []time.Time
	a := join(t, []string{p.Endpoint()}, "a", func(c *cluster.Config) {
		c.TTL, c.Margin = ttl, margin
		c.RequestTimeout = time.Second
		c.OnLost = func() {
			lostMu.Lock()
			lostAt = append(lostAt, time.Now())
			lostMu.Unlock()
		}
	})
	b := join(t, []string{ep}, "b")
	f1, err := a.Create(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetHead(ctx, "s", f1, head(1)); err != nil {
		t.Fatal(err)
	}

	cut := time.Now()
	p.Cut()
	var f2 cluster.Fence
	waitFor(t, 3*ttl, "b to claim s", func() bool {
		f2, err = b.Claim(ctx, "s")
		if err != nil && !errors.Is(err, cluster.ErrConflict) {
			t.Fatalf("claim: %v", err)
		}
		return err == nil
	})
	claimed := time.Now()
	lostMu.Lock()
	lost := lostAt
	lostMu.Unlock()
	if len(lost) != 1 {
		t.Fatalf("OnLost called %d times before b's claim, want 1", len(lost))
	}
	t.Logf("cut at 0, OnLost at %v, b's claim at %v", lost[0].Sub(cut), claimed.Sub(cut))
	if !lost[0].Before(claimed) {
		t.Fatalf("OnLost at %v is not before b's claim at %v", lost[0].Sub(cut), claimed.Sub(cut))
	}
	if d, limit := lost[0].Sub(cut), ttl-margin+500*time.Millisecond; d > limit {
		t.Errorf("OnLost %v after the cut, want within %v", d, limit)
	}
	if a.Live() {
		t.Fatal("a is live with no lease")
	}
	if _, err := a.Claim(ctx, "t"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("claim by a lost node: %v", err)
	}
	if err := a.SetHead(ctx, "s", f1, head(2)); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("set head by a lost node: %v", err)
	}

	// etcd is back: a registers under a new lease; its old fence stays void
	// and etcd itself rejects the late write.
	p.Heal()
	waitFor(t, 3*ttl, "a to register again", a.Live)
	if err := a.SetHead(ctx, "s", f1, head(2)); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("late set head on the old fence: %v", err)
	}
	s, err := b.Get(ctx, "s")
	if err != nil || s.Owner != "b" || s.Fence != f2 || s.Head.Generation != 1 {
		t.Fatalf("s = %+v %+v, %v", s, s.Head, err)
	}
	if hosts, err := b.Hosts(ctx); err != nil || len(hosts) != 2 {
		t.Fatalf("hosts after a came back: %+v, %v", hosts, err)
	}
	if len(lostAt) != 1 {
		t.Fatalf("OnLost called %d times, want 1", len(lostAt))
	}
}

// A host whose connection returns before its lease expires still may not
// use the fences it held before OnLost: they belonged to the old lease.
func TestSelfFenceShortCut(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	ctx := ctxT(t)
	p := clustertest.NewProxy(t, strings.TrimPrefix(ep, "http://"))
	lost := make(chan time.Time, 4)
	// A long TTL and a wide margin: OnLost long before etcd would expire
	// the lease.
	a := join(t, []string{p.Endpoint()}, "a", func(c *cluster.Config) {
		c.TTL, c.Margin = 8*time.Second, 6*time.Second
		c.RequestTimeout = time.Second
		c.OnLost = func() { lost <- time.Now() }
	})
	b := join(t, []string{ep}, "b")
	f1, err := a.Create(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetHead(ctx, "s", f1, head(1)); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	<-lost
	// The old lease is still alive in etcd: s is still a's.
	if s, err := b.Get(ctx, "s"); err != nil || s.Owner != "a" {
		t.Fatalf("s right after OnLost = %+v, %v", s, err)
	}
	p.Heal()
	waitFor(t, 20*time.Second, "a to register again", a.Live)
	if err := a.SetHead(ctx, "s", f1, head(2)); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("set head on a fence of the old lease: %v", err)
	}
	// Registering again revoked the old lease: s is at rest at once.
	if s, err := b.Get(ctx, "s"); err != nil || s.Owner != "" || s.Head.Generation != 1 {
		t.Fatalf("s after a came back = %+v, %v", s, err)
	}
	if owned, err := a.Owned(ctx); err != nil || len(owned) != 0 {
		t.Fatalf("a owns %v, %v", owned, err)
	}
	if _, err := b.Claim(ctx, "s"); err != nil {
		t.Fatal(err)
	}
}

// A leader change in the middle of a run of SetHeads loses none that
// succeeded and applies none twice: a leader stopped gracefully (it hands
// leadership over) and one killed (the others elect a new one).
func TestLeaderChange(t *testing.T) {
	t.Run("stop", func(t *testing.T) { testLeaderChange(t, (*clustertest.Member).Stop) })
	t.Run("kill", func(t *testing.T) { testLeaderChange(t, (*clustertest.Member).Kill) })
}

func testLeaderChange(t *testing.T, stop func(*clustertest.Member)) {
	c := clustertest.StartEtcdCluster(t, 3)
	ctx := ctxT(t)
	lost := make(chan struct{}, 1)
	a := join(t, c.Endpoints(), "a", func(cfg *cluster.Config) {
		cfg.TTL, cfg.Margin = 8*time.Second, 3*time.Second
		cfg.RequestTimeout = 3 * time.Second
		cfg.OnLost = func() { lost <- struct{}{} }
	})
	f, err := a.Create(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	// Publish generations 1, 2, ...; stop the leader at the 10th, and go on
	// until a new leader has taken 10 more.
	ok := map[uint64]bool{}
	var stopped chan struct{}
	var leader, failed, after int
	var n uint64
	limit := time.Now().Add(30 * time.Second)
	for gen := uint64(1); after < 10; gen++ {
		if time.Now().After(limit) {
			t.Fatalf("no new leader 30 s after stopping the old one (generation %d)", gen)
		}
		if gen == 10 {
			leader = c.Leader()
			if leader < 0 {
				t.Fatal("no leader")
			}
			stopped = make(chan struct{})
			go func() { stop(c.Members[leader]); close(stopped) }()
		}
		err := a.SetHead(ctx, "l", f, head(gen))
		switch {
		case err == nil:
			ok[gen] = true
		case errors.Is(err, errdefs.ErrUnavailable):
			failed++
			t.Logf("generation %d: %v", gen, err)
		default:
			t.Fatalf("generation %d: %v", gen, err)
		}
		if stopped != nil {
			select {
			case <-stopped:
				if l := c.Leader(); l >= 0 && l != leader {
					after++
				}
			default:
			}
		}
		n = gen
	}
	t.Logf("stopped leader m%d at generation 10, new leader m%d; %d of %d set heads succeeded, %d failed",
		leader, c.Leader(), len(ok), n, failed)
	select {
	case <-lost:
		t.Errorf("the lease was lost over a leader change")
	default:
	}
	if !ok[n] {
		t.Fatalf("the last set head, after the new leader, failed")
	}

	// Read the head's whole history from etcd.
	gens := headHistory(t, c.Endpoints(), "l", int64(f))
	for i := 1; i < len(gens); i++ {
		if gens[i] <= gens[i-1] {
			t.Fatalf("history %v: generation %d applied after %d", gens, gens[i], gens[i-1])
		}
	}
	seen := map[uint64]bool{}
	for _, g := range gens {
		seen[g] = true
	}
	for g := range ok {
		if !seen[g] {
			t.Errorf("generation %d succeeded but is not in the history %v", g, gens)
		}
	}
	if uint64(len(gens)) > n {
		t.Fatalf("history has %d writes for %d set heads", len(gens), n)
	}
	s, err := a.Get(ctx, "l")
	if err != nil || s.Head.Generation != n {
		t.Fatalf("final head %+v, %v; want generation %d", s.Head, err, n)
	}
}

// headHistory returns the generation of every write of a sprite's head
// since revision from, read from etcd's history.
func headHistory(t testing.TB, eps []string, name string, from int64) []uint64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := "wisp/sprites/" + name + "/head"
	cur, err := cli.Get(ctx, key)
	if err != nil || len(cur.Kvs) != 1 {
		t.Fatalf("get %s: %v", key, err)
	}
	last := cur.Kvs[0].ModRevision
	var gens []uint64
	for wr := range cli.Watch(ctx, key, clientv3.WithRev(from)) {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			var h cluster.Head
			if ev.Type != clientv3.EventTypePut || json.Unmarshal(ev.Kv.Value, &h) != nil {
				t.Fatalf("unexpected event %v", ev)
			}
			gens = append(gens, h.Generation)
			if ev.Kv.ModRevision >= last {
				return gens
			}
		}
	}
	t.Fatal("history watch ended early")
	return nil
}

// A lease that etcd no longer has (revoked by an operator, or expired while
// the host was stalled) is lost at the next keep-alive.
func TestLeaseRevokedElsewhere(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	ctx := ctxT(t)
	lost := make(chan struct{}, 4)
	a := join(t, []string{ep}, "a", func(c *cluster.Config) {
		c.OnLost = func() { lost <- struct{}{} }
	})
	f, err := a.Create(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r, err := cli.Get(ctx, "wisp/hosts/a")
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("get host a: %v", err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(r.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("OnLost not called after the lease was revoked")
	}
	waitFor(t, 10*time.Second, "a to register again", a.Live)
	if err := a.SetHead(ctx, "s", f, head(1)); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("set head on the revoked lease's fence: %v", err)
	}
	if hosts, err := a.Hosts(ctx); err != nil || len(hosts) != 1 {
		t.Fatalf("hosts = %+v, %v", hosts, err)
	}
}

// A daemon restarted after a crash, while its previous lease lives: with
// the previous lease it takes its entry over at once and reclaims its
// sprites with their fences; without it, it waits for that lease to expire.
func TestRestart(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	ctx := ctxT(t)
	b := join(t, []string{ep}, "b")

	p := clustertest.NewProxy(t, strings.TrimPrefix(ep, "http://"))
	old := join(t, []string{p.Endpoint()}, "a", func(c *cluster.Config) { c.RequestTimeout = time.Second })
	f, err := old.Create(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if err := old.SetHead(ctx, "s", f, head(1)); err != nil {
		t.Fatal(err)
	}
	p.Cut() // the crash: the old process's lease is left to expire

	t0 := time.Now()
	a := join(t, []string{ep}, "a", func(c *cluster.Config) { c.Previous = old.Lease() })
	t.Logf("took over in %v", time.Since(t0))
	if err := a.SetHead(ctx, "s", f, head(2)); !errors.Is(err, cluster.ErrConflict) || !strings.Contains(err.Error(), "Reclaim") {
		t.Fatalf("set head before reclaiming: %v", err)
	}
	if err := a.Reclaim(ctx, "s", f); err != nil {
		t.Fatal(err)
	}
	if err := a.SetHead(ctx, "s", f, head(2)); err != nil {
		t.Fatalf("set head on the reclaimed fence: %v", err)
	}
	if hosts, err := b.Hosts(ctx); err != nil || len(hosts) != 2 {
		t.Fatalf("hosts = %+v, %v", hosts, err)
	}
	// The old lease expires: the entry and the sprite stay the new one's.
	waitFor(t, 10*time.Second, "the old lease to expire", func() bool {
		_, err := b.Create(ctx, "probe-"+fmt.Sprint(time.Now().UnixNano()))
		return err == nil && !old.Live()
	})
	if s, err := b.Get(ctx, "s"); err != nil || s.Owner != "a" || s.Fence != f || s.Head.Generation != 2 {
		t.Fatalf("s = %+v, %v", s, err)
	}
	if _, err := b.Claim(ctx, "s"); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("claim of the reclaimed sprite: %v", err)
	}
	if err := b.Reclaim(ctx, "s", f); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("reclaim by another host: %v", err)
	}

	// Without the previous lease: Join waits for it to expire.
	p2 := clustertest.NewProxy(t, strings.TrimPrefix(ep, "http://"))
	join(t, []string{p2.Endpoint()}, "c", func(c *cluster.Config) { c.RequestTimeout = time.Second })
	p2.Cut()
	t0 = time.Now()
	join(t, []string{ep}, "c")
	waited := time.Since(t0)
	t.Logf("joined after the crashed predecessor's lease expired, in %v", waited)
	if waited < 500*time.Millisecond {
		t.Fatalf("joined in %v while the predecessor's lease was alive", waited)
	}
}

func TestShared(t *testing.T) {
	ep := clustertest.StartEtcd(t, t.TempDir())
	ctx := ctxT(t)
	a := join(t, []string{ep}, "a")
	b := join(t, []string{ep}, "b")
	sa, err := a.Secret(ctx)
	if err != nil || len(sa) != 64 {
		t.Fatalf("secret %q, %v", sa, err)
	}
	if sb, err := b.Secret(ctx); err != nil || sb != sa {
		t.Fatalf("b's secret %q, %v; a's %q", sb, err, sa)
	}
	if err := a.ReserveAddr(ctx, "10.100.0.2"); err != nil {
		t.Fatal(err)
	}
	if err := b.ReserveAddr(ctx, "10.100.0.2"); !errors.Is(err, cluster.ErrConflict) || !strings.Contains(err.Error(), "host a") {
		t.Fatalf("second reservation: %v", err)
	}
	a.Close() // reservations outlive their host
	if err := b.ReserveAddr(ctx, "10.100.0.2"); !errors.Is(err, cluster.ErrConflict) {
		t.Fatalf("reservation after its host left: %v", err)
	}
	if err := b.ReleaseAddr(ctx, "10.100.0.2"); err != nil {
		t.Fatal(err)
	}
	if err := b.ReserveAddr(ctx, "10.100.0.2"); err != nil {
		t.Fatal(err)
	}
}
