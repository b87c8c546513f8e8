// Command wisp-devcluster runs what a wisp cluster needs besides its
// wispd hosts, on one machine, for trying cluster mode and for `wisp bench
// move`: a one-member etcd (embedded) and an S3-compatible server
// (gofakes3 on a directory), both on loopback, until it is killed.
//
// It is not for production: a real cluster uses a real etcd (three or five
// members) and a real S3-compatible store (MinIO, Garage, Ceph RGW, AWS
// S3...).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/spf13/afero"
	"go.etcd.io/etcd/server/v3/embed"
)

const usage = `wisp-devcluster: an etcd and an S3 server on this machine, for a wisp cluster

Usage: wisp-devcluster [--dir DIR] [--etcd-addr HOST:PORT] [--etcd-peer-addr HOST:PORT] [--s3-addr HOST:PORT] [--bucket B] [--json]

It runs a one-member etcd (embedded) and an S3-compatible server (gofakes3
on a directory, with the bucket made at start), prints the wispd flags and
the environment that join them, and runs until it is killed. Its data stay
in --dir across runs. Port 0 picks a free port.

This is for trying cluster mode on one machine and for ` + "`wisp bench move`" + `.
Production uses a real etcd (three or five members) and a real S3-compatible
store (MinIO, Garage, Ceph RGW, AWS S3...): give wispd their URLs instead.

Flags:
`

// Ready is what --json prints on one line once both servers answer.
type Ready struct {
	Etcd   string            `json:"etcd"`   // client URL
	S3     string            `json:"s3"`     // endpoint URL
	Bucket string            `json:"bucket"` // made at start
	Dir    string            `json:"dir"`
	Env    map[string]string `json:"env"`   // S3 credentials for wispd (gofakes3 checks none)
	Flags  []string          `json:"flags"` // for each wispd, besides --host-id
}

func main() {
	var (
		dir                        = flag.String("dir", defaultDir(), "where etcd's data and the S3 objects are kept")
		etcdAddr, peerAddr, s3Addr string
		bucket                     string
		asJSON                     bool
	)
	flag.StringVar(&etcdAddr, "etcd-addr", "127.0.0.1:2379", "etcd's client address")
	flag.StringVar(&peerAddr, "etcd-peer-addr", "127.0.0.1:2380", "etcd's peer address (a one-member cluster, but etcd listens on it)")
	flag.StringVar(&s3Addr, "s3-addr", "127.0.0.1:9000", "the S3 server's address")
	flag.StringVar(&bucket, "bucket", "wisp", "the bucket to make")
	flag.BoolVar(&asJSON, "json", false, "print the addresses, flags and environment as one JSON line")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dc, err := start(*dir, etcdAddr, peerAddr, s3Addr, bucket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wisp-devcluster:", err)
		os.Exit(1)
	}
	defer dc.close()
	if asJSON {
		b, _ := json.Marshal(dc.ready)
		fmt.Println(string(b))
	} else {
		printHuman(os.Stdout, dc.ready)
	}
	select {
	case <-ctx.Done():
	case err := <-dc.etcd.Err():
		fmt.Fprintln(os.Stderr, "wisp-devcluster: etcd:", err)
		os.Exit(1)
	}
}

func defaultDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "wisp-devcluster")
	}
	return filepath.Join(os.TempDir(), "wisp-devcluster")
}

func printHuman(w io.Writer, r Ready) {
	fmt.Fprintf(w, "etcd %s, S3 %s bucket %q (data in %s)\n\n", r.Etcd, r.S3, r.Bucket, r.Dir)
	fmt.Fprintln(w, "Start each wispd with this environment and these flags (its own --host-id, and")
	fmt.Fprintln(w, "on one machine its own --data-dir, --socket, --net-name, --vmm-uids and ports):")
	fmt.Fprintln(w)
	var env []string
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		env = append(env, k+"="+r.Env[k])
	}
	fmt.Fprintf(w, "  export %s\n", strings.Join(env, " "))
	fmt.Fprintf(w, "  wispd %s --host-id a ...\n\n", strings.Join(r.Flags, " "))
	fmt.Fprintln(w, "Running until killed (Ctrl-C).")
}

// devCluster is a running etcd and S3 server.
type devCluster struct {
	etcd  *embed.Etcd
	s3    *http.Server
	ready Ready
}

func (d *devCluster) close() {
	if d.s3 != nil {
		d.s3.Close()
	}
	if d.etcd != nil {
		d.etcd.Close()
	}
}

// start brings up etcd with its data in dir/etcd and the S3 server with
// its objects in dir/s3, on the given addresses (port 0: a free one).
func start(dir, etcdAddr, peerAddr, s3Addr, bucket string) (_ *devCluster, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "s3"), 0o700); err != nil {
		return nil, err
	}
	d := &devCluster{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	// S3 first: its listener takes its port at once.
	ln, err := net.Listen("tcp", s3Addr)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	fs, err := s3afero.NewBasePathFs(afero.NewOsFs(), filepath.Join(dir, "s3"), s3afero.FsPathCreateAll)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("s3: %w", err)
	}
	be, err := s3afero.MultiBucket(fs)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("s3: %w", err)
	}
	if ok, err := be.BucketExists(bucket); err != nil {
		ln.Close()
		return nil, fmt.Errorf("s3: %w", err)
	} else if !ok {
		if err := be.CreateBucket(bucket); err != nil {
			ln.Close()
			return nil, fmt.Errorf("s3: make bucket %q: %w", bucket, err)
		}
	}
	d.s3 = &http.Server{
		Handler: gofakes3.New(be).Server(),
		// gofakes3 writes a second status line on some errors (a 404 to
		// a HEAD); net/http's complaint about it is noise.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go d.s3.Serve(ln)

	eaddr, err := resolvePort(etcdAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	paddr, err := resolvePort(peerAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "devcluster"
	cfg.Dir = filepath.Join(dir, "etcd")
	client := url.URL{Scheme: "http", Host: eaddr}
	peer := url.URL{Scheme: "http", Host: paddr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.InitialClusterToken = "wisp-devcluster"
	cfg.Logger = "zap"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	// A restart with a data dir that holds a member already rejoins it.
	if _, err := os.Stat(filepath.Join(cfg.Dir, "member")); err == nil {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	d.etcd, err = embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w (log: %s)", err, filepath.Join(dir, "etcd.log"))
	}
	select {
	case <-d.etcd.Server.ReadyNotify():
	case err := <-d.etcd.Err():
		return nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(time.Minute):
		return nil, errors.New("etcd not ready after a minute (log: " + filepath.Join(dir, "etcd.log") + ")")
	}
	s3URL := "http://" + ln.Addr().String()
	d.ready = Ready{
		Etcd: client.String(), S3: s3URL, Bucket: bucket, Dir: dir,
		Env:   map[string]string{"AWS_ACCESS_KEY_ID": "wisp", "AWS_SECRET_ACCESS_KEY": "wisp-devcluster"},
		Flags: []string{"--cluster", "etcd=" + client.String(), "--s3", s3URL, "--s3-bucket", bucket},
	}
	return d, nil
}

// resolvePort returns addr with port 0 replaced by a free port (bound and
// released: etcd takes its ports by URL).
func resolvePort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
