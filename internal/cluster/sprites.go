package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Create claims a new sprite: it puts the owner key if the name has neither
// an owner nor a head. A taken name is ErrConflict and errdefs.ErrExists
// (with a *HeldError when a host holds it live). The sprite exists for
// others only once a head is published; until then it goes with this
// host's lease.
func (n *Node) Create(ctx context.Context, name string) (Fence, error) {
	f, s, err := n.putOwner(ctx, "create", name, clientv3.Compare(clientv3.CreateRevision(n.k.head(name)), "=", 0))
	switch {
	case err != nil || f != 0:
		return f, err
	case s.Owner != "":
		return 0, fmt.Errorf("cluster: cannot create sprite %q: %w: %w", name, errTaken, &HeldError{name, s.Owner, s.Fence})
	}
	return 0, fmt.Errorf("cluster: cannot create sprite %q: %w: it is at rest, %s", name, errTaken, s.Head.describe())
}

// Claim takes a sprite at rest: it puts the owner key if it is absent and a
// head is published. A sprite held live (by any host, this one included) is
// a *HeldError (ErrConflict); a name with neither is errdefs.ErrNotFound.
// The returned Fence is void once the owner key goes: after Release,
// Delete, Close, or a lost lease.
func (n *Node) Claim(ctx context.Context, name string) (Fence, error) {
	f, s, err := n.putOwner(ctx, "claim", name, clientv3.Compare(clientv3.CreateRevision(n.k.head(name)), ">", 0))
	switch {
	case err != nil || f != 0:
		return f, err
	case s.Owner != "":
		return 0, fmt.Errorf("cluster: cannot claim sprite %q: %w", name, &HeldError{name, s.Owner, s.Fence})
	}
	return 0, fmt.Errorf("cluster: sprite %q: %w", name, errdefs.ErrNotFound)
}

// putOwner puts name's owner key on this Node's lease if it is absent and
// head holds (the head's condition): the fence when it did, else the
// sprite's keys as they are.
func (n *Node) putOwner(ctx context.Context, op, name string, head clientv3.Cmp) (Fence, Sprite, error) {
	if err := checkName("sprite name", name); err != nil {
		return 0, Sprite{}, err
	}
	lease, err := n.current()
	if err != nil {
		return 0, Sprite{}, err
	}
	owner := n.k.owner(name)
	rctx, cancel := n.req(ctx)
	defer cancel()
	resp, err := n.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(owner), "=", 0), head).
		Then(clientv3.OpPut(owner, n.ID(), clientv3.WithLease(lease))).
		Else(clientv3.OpGet(n.k.sprite(name), clientv3.WithPrefix())).
		Commit()
	if err != nil {
		return 0, Sprite{}, n.etcdErr(ctx, fmt.Sprintf("%s sprite %q", op, name), err)
	}
	if resp.Succeeded {
		return Fence(resp.Header.Revision), Sprite{}, nil
	}
	s, err := n.decode(name, resp.Responses[0].GetResponseRange().Kvs)
	return 0, s, err
}

// ours is the condition of every fenced write: the owner key is the one
// this Node put under f, on its current lease.
func (n *Node) ours(name string, f Fence, lease clientv3.LeaseID) []clientv3.Cmp {
	key := n.k.owner(name)
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(key), "=", int64(f)),
		clientv3.Compare(clientv3.Value(key), "=", n.ID()),
		clientv3.Compare(clientv3.LeaseValue(key), "=", lease),
	}
}

// fenced explains a failed fenced write from the sprite's keys as they were.
func (n *Node) fenced(what, name string, f Fence, kvs []*mvccpb.KeyValue) error {
	s, err := n.decode(name, kvs)
	if err != nil {
		return err
	}
	now := "no host owns it"
	switch {
	case s.Owner == n.ID() && s.Fence == f:
		return fmt.Errorf("cluster: cannot %s sprite %q: its owner key is bound to an earlier lease of host %s (Reclaim it): %w",
			what, name, n.ID(), ErrConflict)
	case s.Owner != "":
		now = fmt.Sprintf("host %s owns it with fence %d", s.Owner, s.Fence)
	}
	return fmt.Errorf("cluster: cannot %s sprite %q: fenced: owner changed (fence %d of host %s is void, %s): %w",
		what, name, f, n.ID(), now, ErrConflict)
}

// SetHead publishes h as the sprite's head, if the Node still owns it under
// f. An empty h.Host is this host; a zero h.Time is now. h.State must be
// StateSleeping or StateStopped.
func (n *Node) SetHead(ctx context.Context, name string, f Fence, h Head) error {
	if err := checkName("sprite name", name); err != nil {
		return err
	}
	if h.State != StateSleeping && h.State != StateStopped {
		return fmt.Errorf("cluster: head of sprite %q: state %q is not %s or %s: %w",
			name, h.State, StateSleeping, StateStopped, errdefs.ErrInvalid)
	}
	if h.Host == "" {
		h.Host = n.ID()
	}
	if h.Time.IsZero() {
		h.Time = time.Now().UTC()
	}
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	ran, kvs, err := n.fencedTxn(ctx, name, f, "publish the head of sprite %q (it may or may not be published)", nil,
		clientv3.OpPut(n.k.head(name), string(data)))
	if err != nil || ran {
		return err
	}
	return n.fenced("publish the head of", name, f, kvs)
}

// fencedTxn runs ops if the Node owns name under f on its current lease
// (and the extra conditions hold): ran says they did; otherwise kvs are
// the sprite's keys as they are. what names the operation in an etcd
// error (with %q for the name).
func (n *Node) fencedTxn(ctx context.Context, name string, f Fence, what string, extra []clientv3.Cmp, ops ...clientv3.Op) (ran bool, kvs []*mvccpb.KeyValue, err error) {
	lease, err := n.current()
	if err != nil {
		return false, nil, err
	}
	rctx, cancel := n.req(ctx)
	defer cancel()
	resp, err := n.cli.Txn(rctx).
		If(append(n.ours(name, f, lease), extra...)...).
		Then(ops...).
		Else(clientv3.OpGet(n.k.sprite(name), clientv3.WithPrefix())).
		Commit()
	if err != nil {
		return false, nil, n.etcdErr(ctx, fmt.Sprintf(what, name), err)
	}
	if resp.Succeeded {
		return true, nil, nil
	}
	return false, resp.Responses[0].GetResponseRange().Kvs, nil
}

// Release gives up a sprite at rest: it deletes the owner key if the Node
// still owns it under f (else ErrConflict). A sprite with no published
// head cannot be released (errdefs.ErrState): it would be forgotten;
// publish a head or Delete it.
func (n *Node) Release(ctx context.Context, name string, f Fence) error {
	if err := checkName("sprite name", name); err != nil {
		return err
	}
	ran, kvs, err := n.fencedTxn(ctx, name, f, "release sprite %q",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(n.k.head(name)), ">", 0)},
		clientv3.OpDelete(n.k.owner(name)))
	if err != nil || ran {
		return err
	}
	s, err := n.decode(name, kvs)
	if err != nil {
		return err
	}
	if s.Head == nil && s.Owner == n.ID() && s.Fence == f {
		return fmt.Errorf("cluster: cannot release sprite %q: it has no published head and would be forgotten; publish one or delete the sprite: %w",
			name, errdefs.ErrState)
	}
	return n.fenced("release", name, f, kvs)
}

// Delete destroys a sprite's record: its head and owner key, if the Node
// still owns it under f (else ErrConflict).
func (n *Node) Delete(ctx context.Context, name string, f Fence) error {
	if err := checkName("sprite name", name); err != nil {
		return err
	}
	ran, kvs, err := n.fencedTxn(ctx, name, f, "delete sprite %q", nil,
		clientv3.OpDelete(n.k.head(name)), clientv3.OpDelete(n.k.owner(name)))
	if err != nil || ran {
		return err
	}
	return n.fenced("delete", name, f, kvs)
}

// Reclaim binds to this Node's current lease the owner key this host put
// under f on an earlier lease (a daemon restarted before its previous
// lease expired: see Config.Previous). The fence stays f. ErrConflict when
// that key is gone or is not this host's any more.
func (n *Node) Reclaim(ctx context.Context, name string, f Fence) error {
	if err := checkName("sprite name", name); err != nil {
		return err
	}
	lease, err := n.current()
	if err != nil {
		return err
	}
	owner := n.k.owner(name)
	rctx, cancel := n.req(ctx)
	defer cancel()
	resp, err := n.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(owner), "=", int64(f)),
			clientv3.Compare(clientv3.Value(owner), "=", n.ID())).
		Then(clientv3.OpPut(owner, n.ID(), clientv3.WithLease(lease))).
		Else(clientv3.OpGet(n.k.sprite(name), clientv3.WithPrefix())).
		Commit()
	if err != nil {
		return n.etcdErr(ctx, fmt.Sprintf("reclaim sprite %q", name), err)
	}
	if !resp.Succeeded {
		return n.fenced("reclaim", name, f, resp.Responses[0].GetResponseRange().Kvs)
	}
	return nil
}

// Get returns what etcd knows of a sprite; errdefs.ErrNotFound when it has
// neither an owner nor a head.
func (n *Node) Get(ctx context.Context, name string) (Sprite, error) {
	if err := checkName("sprite name", name); err != nil {
		return Sprite{}, err
	}
	rctx, cancel := n.req(ctx)
	defer cancel()
	resp, err := n.cli.Get(rctx, n.k.sprite(name), clientv3.WithPrefix())
	if err != nil {
		return Sprite{}, n.etcdErr(ctx, fmt.Sprintf("read sprite %q", name), err)
	}
	s, err := n.decode(name, resp.Kvs)
	if err != nil {
		return Sprite{}, err
	}
	if s.Owner == "" && s.Head == nil {
		return Sprite{}, fmt.Errorf("cluster: sprite %q: %w", name, errdefs.ErrNotFound)
	}
	return s, nil
}

// List returns every sprite etcd knows, sorted by name.
func (n *Node) List(ctx context.Context) ([]Sprite, error) {
	all, err := n.list(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Sprite, 0, len(all))
	for _, s := range all {
		out = append(out, s.Sprite)
	}
	return out, nil
}

// Owned returns the names of the sprites this Node owns under its current
// lease, sorted.
func (n *Node) Owned(ctx context.Context) ([]string, error) {
	lease, err := n.current()
	if err != nil {
		return nil, err
	}
	all, err := n.list(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range all {
		if s.Owner == n.ID() && s.lease == lease {
			names = append(names, s.Name)
		}
	}
	return names, nil
}

type listed struct {
	Sprite
	lease clientv3.LeaseID // of the owner key
}

func (n *Node) list(ctx context.Context) ([]listed, error) {
	rctx, cancel := n.req(ctx)
	defer cancel()
	prefix := n.k.sprites()
	resp, err := n.cli.Get(rctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, n.etcdErr(ctx, "list sprites", err)
	}
	byName := map[string][]*mvccpb.KeyValue{}
	for _, kv := range resp.Kvs {
		name, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), prefix), "/")
		if ok {
			byName[name] = append(byName[name], kv)
		}
	}
	out := make([]listed, 0, len(byName))
	for name, kvs := range byName {
		s, err := n.decode(name, kvs)
		if err != nil {
			return nil, err
		}
		l := listed{Sprite: s}
		for _, kv := range kvs {
			if string(kv.Key) == n.k.owner(name) {
				l.lease = clientv3.LeaseID(kv.Lease)
			}
		}
		if s.Owner != "" || s.Head != nil {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// decode builds a Sprite from its keys.
func (n *Node) decode(name string, kvs []*mvccpb.KeyValue) (Sprite, error) {
	s := Sprite{Name: name}
	for _, kv := range kvs {
		switch string(kv.Key) {
		case n.k.owner(name):
			s.Owner, s.Fence = string(kv.Value), Fence(kv.CreateRevision)
		case n.k.head(name):
			var h Head
			if err := json.Unmarshal(kv.Value, &h); err != nil {
				return Sprite{}, fmt.Errorf("cluster: sprite %q has an unreadable head: %v: %w", name, err, errdefs.ErrInvalid)
			}
			s.Head = &h
		}
	}
	return s, nil
}

func (h *Head) describe() string {
	return fmt.Sprintf("%s at generation %d, last on host %s", h.State, h.Generation, h.Host)
}

// Watch calls fn with a sprite's name whenever one of its keys changes, and
// with "" when changes may have been missed (etcd compacted past them):
// reload everything then. It blocks until ctx is done or the Node closes,
// and returns ctx's error or nil. fn runs on Watch's goroutine.
func (n *Node) Watch(ctx context.Context, fn func(name string)) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()
	prefix := n.k.sprites()
	var rev int64
	for wctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		for wr := range n.cli.Watch(clientv3.WithRequireLeader(wctx), prefix, opts...) {
			if wr.CompactRevision != 0 {
				rev = 0
				fn("")
				break
			}
			if err := wr.Err(); err != nil {
				n.cfg.Log.Warn("cluster: watch interrupted; watching again", logHost, n.ID(), logErr, err)
				break
			}
			for _, ev := range wr.Events {
				name, _, ok := strings.Cut(strings.TrimPrefix(string(ev.Kv.Key), prefix), "/")
				if ok {
					fn(name)
				}
			}
			rev = wr.Header.Revision
		}
		if wctx.Err() == nil {
			if !sleepCtx(wctx, 200*time.Millisecond) {
				break
			}
		}
	}
	return ctx.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
