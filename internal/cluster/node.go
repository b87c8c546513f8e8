package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Log keys.
const (
	logHost  = "host"
	logLease = "lease"
	logErr   = "err"
)

// Node is this host's membership in the cluster. Its methods are safe for
// concurrent use.
type Node struct {
	cfg      Config
	cli      *clientv3.Client
	k        keys
	interval time.Duration // between keep-alives

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	host   Host
	lease  clientv3.LeaseID
	live   bool // false from the watchdog's firing until registered again
	closed bool
	// lastOK is when the last successful keep-alive (or the grant) was
	// sent: the lease lives at least TTL from then.
	lastOK time.Time

	closeOnce sync.Once
	closeErr  error
}

// Join connects to etcd, grants this host's lease, registers the host under
// it and starts keeping it alive. A host id already registered by a live
// lease is refused with ErrConflict (in about a second); one registered by
// a lease nobody renews (a crashed predecessor) is waited for, up to its
// TTL, unless that lease is Config.Previous, which is taken over at once.
// ctx bounds only the joining.
func Join(ctx context.Context, cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Logger:      zap.NewNop(),
		// gRPC's own reconnect backoff grows to 2 minutes: after a long
		// partition the host would stay away that long once etcd is back.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to etcd at %s: %v: %w", strings.Join(cfg.Endpoints, ","), err, errdefs.ErrUnavailable)
	}
	n := &Node{
		cfg:      cfg,
		cli:      cli,
		k:        keys(cfg.Prefix),
		interval: max((cfg.TTL-cfg.Margin)/3, 100*time.Millisecond),
		host:     cfg.Host,
	}
	t0, lease, err := n.register(ctx)
	if err != nil {
		cli.Close()
		return nil, err
	}
	n.lease, n.live, n.lastOK = lease, true, t0
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.wg.Add(1)
	go n.keep(t0)
	cfg.Log.Info("cluster: joined", logHost, cfg.Host.ID, logLease, fmt.Sprintf("%x", int64(lease)),
		"ttl", cfg.TTL, "margin", cfg.Margin)
	return n, nil
}

// ID is this host's id.
func (n *Node) ID() string { return n.cfg.Host.ID }

// Lease is the id of the lease the Node holds now; it changes when the Node
// registers again after a lost lease. Keep it on local disk: a daemon
// restarted after a crash passes it as Config.Previous to take over its
// entry, and Reclaims its sprites before that lease expires. A stale one
// does no harm: Join then waits as without it.
func (n *Node) Lease() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return int64(n.lease)
}

// register grants a new lease and puts the host entry on it. An entry
// held by another lease is taken over if that lease is Config.Previous;
// otherwise register waits for that lease to expire (a crashed
// predecessor's) and refuses a live one with ErrConflict. It returns the
// time just before the grant was sent: the lease cannot expire before that
// time plus the TTL.
func (n *Node) register(ctx context.Context) (time.Time, clientv3.LeaseID, error) {
	for {
		t0, lease, holder, err := n.tryRegister(ctx)
		if err != nil || lease != 0 {
			return t0, lease, err
		}
		if err := n.waitExpiry(ctx, holder); err != nil {
			return time.Time{}, 0, err
		}
	}
}

// tryRegister makes one attempt; a zero lease and no error means the entry
// is held by the lease holder.
func (n *Node) tryRegister(ctx context.Context) (t0 time.Time, lease clientv3.LeaseID, holder clientv3.LeaseID, err error) {
	n.mu.Lock()
	h := n.host
	n.mu.Unlock()
	data, err := json.Marshal(h)
	if err != nil {
		return t0, 0, 0, err
	}
	rctx, cancel := n.req(ctx)
	defer cancel()
	t0 = time.Now()
	g, err := n.cli.Grant(rctx, int64(math.Ceil(n.cfg.TTL.Seconds())))
	if err != nil {
		return t0, 0, 0, n.etcdErr(ctx, "grant the host lease", err)
	}
	key := n.k.host(h.ID)
	resp, err := n.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(data), clientv3.WithLease(g.ID))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err == nil && resp.Succeeded {
		return t0, g.ID, 0, nil
	}
	if err == nil {
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			holder = clientv3.LeaseID(kvs[0].Lease)
		}
		if prev := clientv3.LeaseID(n.cfg.Previous); prev != 0 && holder == prev {
			resp, err = n.cli.Txn(rctx).
				If(clientv3.Compare(clientv3.LeaseValue(key), "=", prev)).
				Then(clientv3.OpPut(key, string(data), clientv3.WithLease(g.ID))).
				Commit()
			if err == nil && resp.Succeeded {
				n.cfg.Log.Info("cluster: took over the entry of this host's previous lease", logHost, h.ID,
					logLease, fmt.Sprintf("%x", int64(prev)))
				return t0, g.ID, 0, nil
			}
		}
	}
	n.revoke(g.ID)
	if err != nil {
		return t0, 0, 0, n.etcdErr(ctx, "register host "+h.ID, err)
	}
	return t0, 0, holder, nil
}

// waitExpiry waits for the lease that holds this host's entry to expire:
// nil once it has (or the entry went), ErrConflict as soon as it is seen
// renewed or when it outlives its TTL.
func (n *Node) waitExpiry(ctx context.Context, holder clientv3.LeaseID) error {
	key := n.k.host(n.ID())
	live := func() error {
		var other Host
		rctx, cancel := n.req(ctx)
		defer cancel()
		if r, err := n.cli.Get(rctx, key); err == nil && len(r.Kvs) > 0 {
			_ = json.Unmarshal(r.Kvs[0].Value, &other)
		}
		return fmt.Errorf("cluster: host id %s is already registered by a live host (API %s, started %s): %w",
			n.ID(), other.API, other.Started.Format(time.RFC3339), ErrConflict)
	}
	// etcd reports the remaining TTL in whole seconds (rounded up): a
	// lease nobody renews shows at least one second less a second later.
	var first time.Time
	var firstTTL int64
	for {
		rctx, cancel := n.req(ctx)
		ttl, err := n.cli.TimeToLive(rctx, holder)
		cancel()
		now := time.Now()
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil && ttl.TTL <= 0:
			return nil
		case err != nil:
			return n.etcdErr(ctx, "read the lease of host "+n.ID()+"'s entry", err)
		case first.IsZero():
			first, firstTTL = now, ttl.TTL
			n.cfg.Log.Warn("cluster: this host's id is held by another lease; waiting for it to expire",
				logHost, n.ID(), logLease, fmt.Sprintf("%x", int64(holder)), "ttl_s", ttl.TTL)
		case now.Sub(first) > 1100*time.Millisecond && ttl.TTL >= firstTTL,
			now.After(first.Add(time.Duration(firstTTL)*time.Second + time.Second)):
			return live()
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return fmt.Errorf("cluster: join as host %s: %w", n.ID(), ctx.Err())
		}
	}
}

// revoke revokes lease, best effort, bounded.
func (n *Node) revoke(lease clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RequestTimeout)
	defer cancel()
	_, err := n.cli.Revoke(ctx, lease)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return nil
	}
	return err
}

// keep keeps the lease alive and is the watchdog: when no keep-alive has
// succeeded for TTL - Margin it calls OnLost, then registers again. lastOK
// is when the last successful keep-alive (or the grant) was sent.
func (n *Node) keep(lastOK time.Time) {
	defer n.wg.Done()
	next := lastOK.Add(n.interval)
	for {
		n.mu.Lock()
		n.lastOK = lastOK
		n.mu.Unlock()
		n.mu.Lock()
		lease := n.lease
		n.mu.Unlock()
		deadline := lastOK.Add(n.cfg.TTL - n.cfg.Margin)
		if !n.sleepUntil(earliest(next, deadline)) {
			return
		}
		if !time.Now().Before(deadline) {
			n.lose(lease, "keep-alives failed for "+time.Since(lastOK).Round(time.Millisecond).String())
			t, ok := n.rejoin(lease)
			if !ok {
				return
			}
			lastOK, next = t, t.Add(n.interval)
			continue
		}
		t0 := time.Now()
		ctx, cancel := context.WithDeadline(n.ctx, earliest(t0.Add(n.interval), deadline))
		_, err := n.cli.KeepAliveOnce(ctx, lease)
		cancel()
		switch {
		case err == nil:
			lastOK, next = t0, t0.Add(n.interval)
		case n.ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			n.lose(lease, "etcd says the lease expired")
			t, ok := n.rejoin(lease)
			if !ok {
				return
			}
			lastOK, next = t, t.Add(n.interval)
		default:
			n.cfg.Log.Warn("cluster: lease keep-alive failed", logHost, n.ID(), logErr, err,
				"since_ok", time.Since(lastOK).Round(time.Millisecond))
			next = time.Now().Add(n.interval / 3)
		}
	}
}

// sleepUntil waits until t or Close; false on Close.
func (n *Node) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return n.ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-n.ctx.Done():
		return false
	}
}

// lose marks the lease lost and calls OnLost.
func (n *Node) lose(lease clientv3.LeaseID, why string) {
	n.mu.Lock()
	n.live = false
	n.mu.Unlock()
	n.cfg.Log.Error("cluster: host lease lost; stopping owned sprites", logHost, n.ID(),
		logLease, fmt.Sprintf("%x", int64(lease)), "why", why)
	if n.cfg.OnLost != nil {
		n.cfg.OnLost()
	}
}

// rejoin revokes the old lease (its owner keys go with it) and registers
// under a new one, retrying until it works or Close. It returns the new
// lease's grant time.
func (n *Node) rejoin(old clientv3.LeaseID) (time.Time, bool) {
	wait := n.interval
	for n.ctx.Err() == nil {
		err := n.revoke(old)
		var t0 time.Time
		var lease clientv3.LeaseID
		if err == nil {
			t0, lease, err = n.register(n.ctx)
		}
		if err == nil {
			n.mu.Lock()
			n.lease, n.live = lease, true
			n.mu.Unlock()
			n.cfg.Log.Info("cluster: registered again under a new lease", logHost, n.ID(),
				logLease, fmt.Sprintf("%x", int64(lease)))
			return t0, true
		}
		n.cfg.Log.Warn("cluster: cannot register again yet", logHost, n.ID(), logErr, err)
		if !n.sleepUntil(time.Now().Add(wait)) {
			break
		}
		wait = min(2*wait, n.cfg.TTL)
	}
	return time.Time{}, false
}

// current returns the lease to act under, or why the Node may not act.
func (n *Node) current() (clientv3.LeaseID, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return 0, fmt.Errorf("cluster: host %s has left the cluster: %w", n.ID(), errdefs.ErrUnavailable)
	case !n.live:
		return 0, fmt.Errorf("cluster: host %s lost its etcd lease and has not registered again; its claims are void: %w",
			n.ID(), errdefs.ErrUnavailable)
	}
	return n.lease, nil
}

// Live reports whether the Node holds a lease it trusts. It is false from
// the watchdog's firing (before OnLost) until it has registered again, and
// after Close.
func (n *Node) Live() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.live && !n.closed
}

// req bounds one etcd call.
func (n *Node) req(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, n.cfg.RequestTimeout)
}

// etcdErr says what failed; an etcd that did not answer is ErrUnavailable.
// ctx is the caller's: its own cancellation is returned as is.
func (n *Node) etcdErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("cluster: %s: %w", what, ctx.Err())
	}
	eps := strings.Join(n.cfg.Endpoints, ",")
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("cluster: %s: etcd at %s did not answer within %v: %w", what, eps, n.cfg.RequestTimeout, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("cluster: %s: etcd at %s: %v: %w", what, eps, err, errdefs.ErrUnavailable)
}

// Hosts lists the live hosts, sorted by ID.
func (n *Node) Hosts(ctx context.Context) ([]Host, error) {
	rctx, cancel := n.req(ctx)
	defer cancel()
	resp, err := n.cli.Get(rctx, n.k.hosts(), clientv3.WithPrefix())
	if err != nil {
		return nil, n.etcdErr(ctx, "list hosts", err)
	}
	hosts := make([]Host, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h Host
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			n.cfg.Log.Warn("cluster: skipping an unreadable host entry", "key", string(kv.Key), logErr, err)
			continue
		}
		hosts = append(hosts, h)
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].ID < hosts[j].ID })
	return hosts, nil
}

// SetHost replaces this host's entry (h.ID must be empty or this host's id;
// a zero Started keeps the one registered). The entry is kept across
// re-registrations.
func (n *Node) SetHost(ctx context.Context, h Host) error {
	if h.ID == "" {
		h.ID = n.ID()
	}
	if h.ID != n.ID() {
		return fmt.Errorf("cluster: host %s cannot set the entry of host %s: %w", n.ID(), h.ID, errdefs.ErrInvalid)
	}
	lease, err := n.current()
	if err != nil {
		return err
	}
	n.mu.Lock()
	if h.Started.IsZero() {
		h.Started = n.host.Started
	}
	n.mu.Unlock()
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	key := n.k.host(h.ID)
	rctx, cancel := n.req(ctx)
	defer cancel()
	resp, err := n.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
		Then(clientv3.OpPut(key, string(data), clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return n.etcdErr(ctx, "update host "+h.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("cluster: the entry of host %s is no longer on its lease: %w", h.ID, ErrConflict)
	}
	n.mu.Lock()
	n.host = h
	n.mu.Unlock()
	return nil
}

// Close revokes the lease, so this host's entry and owner keys go at once,
// stops the keep-alive and watchdog and waits for them, and disconnects.
// It does not call OnLost. If etcd does not answer, the keys go when the
// lease expires.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		n.wg.Wait()
		n.mu.Lock()
		lease, live := n.lease, n.live
		n.closed = true
		n.mu.Unlock()
		var err error
		if err = n.revoke(lease); err != nil && !live {
			err = nil // a lost lease: best effort
		}
		if err != nil {
			err = fmt.Errorf("cluster: revoke the lease of host %s (its keys go within %v): %v: %w",
				n.ID(), n.cfg.TTL, err, errdefs.ErrUnavailable)
		}
		n.closeErr = errors.Join(err, n.cli.Close())
		n.cfg.Log.Info("cluster: left", logHost, n.ID())
	})
	return n.closeErr
}

// keys lays out the key space under a prefix ending in "/".
type keys string

func (k keys) hosts() string             { return string(k) + "hosts/" }
func (k keys) host(id string) string     { return k.hosts() + id }
func (k keys) sprites() string           { return string(k) + "sprites/" }
func (k keys) sprite(name string) string { return k.sprites() + name + "/" }
func (k keys) owner(name string) string  { return k.sprite(name) + "owner" }
func (k keys) head(name string) string   { return k.sprite(name) + "head" }

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
func (k keys) addr(a string) string { return string(k) + "addrs/" + a }
func (k keys) secret() string       { return string(k) + "secret" }

// Deadline is when a process that outlives the daemon (a fence watchdog)
// must stop this host's sprites if no keep-alive succeeds before: the
// last successful one plus TTL - Margin/2. OnLost fires Margin/2 earlier,
// the lease cannot expire before Margin/2 later.
func (n *Node) Deadline() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lastOK.Add(n.cfg.TTL - n.cfg.Margin/2)
}
