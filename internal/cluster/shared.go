package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// Secret returns the cluster's shared secret (64 hex digits), made by the
// first host that asks. Hosts use it to trust requests forwarded by one
// another; anyone who can read etcd can read it.
func (n *Node) Secret(ctx context.Context) (string, error) {
	var b [32]byte
	rand.Read(b[:])
	mine := hex.EncodeToString(b[:])
	key := n.k.secret()
	rctx, cancel := n.req(ctx)
	defer cancel()
	resp, err := n.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, mine)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return "", n.etcdErr(ctx, "read the cluster's secret", err)
	}
	if resp.Succeeded {
		return mine, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || len(kvs[0].Value) == 0 {
		return "", fmt.Errorf("cluster: the cluster's secret at %s is empty: %w", key, errdefs.ErrInvalid)
	}
	return string(kvs[0].Value), nil
}

// ReserveAddr takes a sprite address for the whole cluster, until
// ReleaseAddr; ErrConflict when it is taken (by any host). Reservations
// are not bound to a lease: the address stays with its sprite as it moves.
func (n *Node) ReserveAddr(ctx context.Context, addr string) error {
	if err := checkName("address", addr); err != nil {
		return err
	}
	key := n.k.addr(addr)
	rctx, cancel := n.req(ctx)
	defer cancel()
	resp, err := n.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, n.ID())).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return n.etcdErr(ctx, "reserve address "+addr, err)
	}
	if resp.Succeeded {
		return nil
	}
	by := "?"
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		by = string(kvs[0].Value)
	}
	return fmt.Errorf("cluster: address %s is taken (reserved by host %s): %w", addr, by, ErrConflict)
}

// ReleaseAddr frees an address ReserveAddr took (by any host: the sprite
// that had it is gone). Freeing a free address is not an error.
func (n *Node) ReleaseAddr(ctx context.Context, addr string) error {
	if err := checkName("address", addr); err != nil {
		return err
	}
	rctx, cancel := n.req(ctx)
	defer cancel()
	if _, err := n.cli.Delete(rctx, n.k.addr(addr)); err != nil {
		return n.etcdErr(ctx, "release address "+addr, err)
	}
	return nil
}
