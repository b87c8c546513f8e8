package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wisp-sh/wisp/internal/blob"
)

// TestDevCluster: etcd and the S3 server answer what wispd asks of them
// (a conditional PUT is refused on an existing key, a listing by prefix),
// and what they hold is still there after a restart on the same dir.
func TestDevCluster(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	d, err := start(dir, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "wisp")
	if err != nil {
		t.Fatal(err)
	}
	r := d.ready
	if len(r.Flags) != 6 || r.Flags[1] != "etcd="+r.Etcd || r.Flags[3] != r.S3 || r.Flags[5] != "wisp" {
		t.Fatalf("flags %q for %+v", r.Flags, r)
	}
	// What wisp bench move reads of --json (its own copy of the type:
	// the CLI links nothing of this binary).
	line, _ := json.Marshal(r)
	var fields map[string]any
	json.Unmarshal(line, &fields)
	for _, k := range []string{"etcd", "s3", "bucket", "env", "flags"} {
		if fields[k] == nil {
			t.Errorf("--json line %s has no %q", line, k)
		}
	}
	var human bytes.Buffer
	printHuman(&human, r)
	if !strings.Contains(human.String(), "wispd "+strings.Join(r.Flags, " ")) || !strings.Contains(human.String(), "AWS_ACCESS_KEY_ID=wisp") {
		t.Fatalf("human output:\n%s", human.String())
	}

	b := bucket(t, r)
	if err := b.PutIfAbsent(ctx, "sprites/m1/gen/1.json", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := b.PutIfAbsent(ctx, "sprites/m1/gen/1.json", []byte("two")); !errors.Is(err, blob.ErrConflict) {
		t.Fatalf("second conditional PUT: %v, want a conflict", err)
	}
	if err := b.Put(ctx, "chunks/ab/abcd", []byte("chunk")); err != nil {
		t.Fatal(err)
	}
	kv := etcdClient(t, r)
	if _, err := kv.Put(ctx, "hosts/a", "here"); err != nil {
		t.Fatal(err)
	}
	kv.Close()
	d.close()

	// Again on the same dir, new ports: everything is kept.
	d, err = start(dir, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "wisp")
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	b = bucket(t, d.ready)
	rc, err := b.Get(ctx, "sprites/m1/gen/1.json")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "one" {
		t.Fatalf("manifest after a restart: %q", got)
	}
	var keys []string
	if err := b.List(ctx, "chunks/", func(k string, _ time.Time) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "chunks/ab/abcd" {
		t.Fatalf("chunks listed: %q", keys)
	}
	kv = etcdClient(t, d.ready)
	defer kv.Close()
	res, err := kv.Get(ctx, "hosts/a")
	if err != nil || len(res.Kvs) != 1 || string(res.Kvs[0].Value) != "here" {
		t.Fatalf("etcd after a restart: %v %v", res, err)
	}
}

func bucket(t *testing.T, r Ready) blob.Bucket {
	t.Helper()
	b, err := blob.NewS3(blob.S3Config{Endpoint: r.S3, Bucket: r.Bucket, AccessKey: r.Env["AWS_ACCESS_KEY_ID"], SecretKey: r.Env["AWS_SECRET_ACCESS_KEY"]})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func etcdClient(t *testing.T, r Ready) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{r.Etcd}, DialTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
