// Package clustertest runs embedded etcd servers on loopback for tests.
package clustertest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// StartEtcd starts a one-member etcd with its data under dir, on loopback
// ports of its own, stopped when the test ends. It returns the client
// endpoint (http://127.0.0.1:PORT).
func StartEtcd(t testing.TB, dir string) string {
	t.Helper()
	return StartEtcdAt(t, dir, "127.0.0.1")
}

// StartEtcdAt is StartEtcd listening on ip (say, a bridge address that
// daemons in network namespaces of their own can reach).
func StartEtcdAt(t testing.TB, dir, ip string) string {
	t.Helper()
	c := start(t, dir, ip, 1)
	return c.Members[0].Endpoint
}

// Member is one etcd server of a Cluster.
type Member struct {
	Name     string
	Endpoint string // client URL
	Etcd     *embed.Etcd

	stop sync.Once
}

// Kill stops the member without handing leadership over (the others must
// notice it is gone and elect a leader), then closes it (idempotent with
// Stop).
func (m *Member) Kill() {
	m.stop.Do(func() {
		m.Etcd.Server.HardStop()
		m.Etcd.Close()
	})
}

// Stop stops the member gracefully: a leader hands leadership over first
// (idempotent).
func (m *Member) Stop() {
	m.stop.Do(func() {
		m.Etcd.Close()
	})
}

// Cluster is a set of embedded etcd members that form one cluster.
type Cluster struct {
	Members []*Member
}

// StartEtcdCluster starts an n-member etcd on loopback, with data in
// t.TempDir(), stopped when the test ends.
func StartEtcdCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return start(t, t.TempDir(), "127.0.0.1", n)
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.Endpoint)
	}
	return eps
}

// Leader returns the index of the member that is leader as running members
// see it, or -1.
func (c *Cluster) Leader() int {
	for i, m := range c.Members {
		select {
		case <-m.Etcd.Server.StopNotify():
			continue
		default:
		}
		if m.Etcd.Server.Leader() == m.Etcd.Server.MemberID() {
			return i
		}
	}
	return -1
}

// start starts n members. Free ports are picked by binding port 0 and
// releasing it; a lost race for a port is retried.
func start(t testing.TB, dir, ip string, n int) *Cluster {
	t.Helper()
	var lastErr error
	for attempt := range 5 {
		c, err := tryStart(filepath.Join(dir, fmt.Sprintf("etcd-%d", attempt)), ip, n)
		if err == nil {
			t.Cleanup(func() {
				for _, m := range c.Members {
					m.Stop()
				}
			})
			return c
		}
		lastErr = err
	}
	t.Fatalf("start etcd: %v", lastErr)
	return nil
}

func tryStart(dir, ip string, n int) (*Cluster, error) {
	type ports struct{ client, peer url.URL }
	ps := make([]ports, n)
	var initial []string
	for i := range ps {
		cp, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		pp, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		ps[i] = ports{url.URL{Scheme: "http", Host: cp}, url.URL{Scheme: "http", Host: pp}}
		initial = append(initial, fmt.Sprintf("m%d=%s", i, ps[i].peer.String()))
	}
	c := &Cluster{}
	errs := make(chan error, n)
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, err
		}
		cfg.ListenClientUrls = []url.URL{ps[i].client}
		cfg.AdvertiseClientUrls = []url.URL{ps[i].client}
		cfg.ListenPeerUrls = []url.URL{ps[i].peer}
		cfg.AdvertisePeerUrls = []url.URL{ps[i].peer}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "wisp-test"
		cfg.UnsafeNoFsync = true
		cfg.Logger = "zap"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			for _, m := range c.Members {
				m.Stop()
			}
			return nil, err
		}
		m := &Member{Name: cfg.Name, Endpoint: ps[i].client.String(), Etcd: e}
		c.Members = append(c.Members, m)
		go func() {
			select {
			case <-e.Server.ReadyNotify():
				errs <- nil
			case err := <-e.Err():
				errs <- err
			case <-time.After(60 * time.Second):
				errs <- fmt.Errorf("etcd member %s not ready after 60 s", m.Name)
			}
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			for _, m := range c.Members {
				m.Stop()
			}
			return nil, err
		}
	}
	return c, nil
}

func freePort(ip string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
