package cli

import (
	"testing"
	"time"
)

func TestLogFields(t *testing.T) {
	line := `time=2026-11-30T00:51:57.829Z level=INFO msg="sprite published" sprite=m1 generation=1 state=sleeping bytes_uploaded=1395602 chunks_uploaded=73 took=89ms`
	f := logFields(line)
	for k, want := range map[string]string{"msg": "sprite published", "sprite": "m1", "generation": "1", "bytes_uploaded": "1395602", "took": "89ms"} {
		if f[k] != want {
			t.Errorf("%s = %q, want %q (all: %v)", k, f[k], want, f)
		}
	}
	f = logFields(`level=WARN msg=publish sprite=m1 err="publish sprite \"m1\" generation 2: s3: unavailable"`)
	if f["err"] != `publish sprite "m1" generation 2: s3: unavailable` || f["msg"] != "publish" {
		t.Errorf("quoted value: %v", f)
	}
	if f := logFields(`not a log line at all`); len(f) != 0 {
		t.Errorf("prose: %v", f)
	}
	if f := logFields(`msg="unterminated`); len(f) != 0 {
		t.Errorf("unterminated quote: %v", f)
	}
}

func TestFindPublished(t *testing.T) {
	log := []byte(`time=x level=INFO msg="sprite published" sprite=m10 generation=1 bytes_uploaded=5 took=1s
time=x level=INFO msg="sprite published" sprite=m1 generation=1 state=sleeping bytes_uploaded=1395602 chunks_uploaded=73 took=89ms
time=x level=INFO msg="sprite published" sprite=m1 generation=2 state=sleeping bytes_uploaded=100 chunks_uploaded=1 took=1.5s
`)
	p, ok, failed := findPublished(log, "m1", 2)
	if !ok || failed != "" || p.bytes != 100 || p.took != 1500*time.Millisecond {
		t.Errorf("generation 2: %+v %v %q", p, ok, failed)
	}
	p, ok, _ = findPublished(log, "m1", 1)
	if !ok || p.bytes != 1395602 || p.took != 89*time.Millisecond {
		t.Errorf("generation 1: %+v %v", p, ok)
	}
	if _, ok, failed := findPublished(log, "m1", 3); ok || failed != "" {
		t.Errorf("generation 3 found: %v %q", ok, failed)
	}
	bad := append(log, []byte(`time=x level=WARN msg=publish sprite=m1 err="no bucket"`+"\n")...)
	if _, ok, failed := findPublished(bad, "m1", 3); ok || failed != "no bucket" {
		t.Errorf("failed publish: %v %q", ok, failed)
	}
	if _, ok, failed := findPublished([]byte(`msg="sprite published" sprite=m1 generation=4 bytes_uploaded=x took=1s`), "m1", 4); ok || failed == "" {
		t.Errorf("unreadable line: %v %q", ok, failed)
	}
}

func TestParseDevclusterReady(t *testing.T) {
	r, err := parseDevclusterReady([]byte(`{"etcd":"http://127.0.0.1:2379","s3":"http://127.0.0.1:9000","bucket":"wisp","dir":"/d","env":{"AWS_ACCESS_KEY_ID":"wisp","AWS_SECRET_ACCESS_KEY":"s"},"flags":["--cluster","etcd=http://127.0.0.1:2379","--s3","http://127.0.0.1:9000","--s3-bucket","wisp"]}` + "\n"))
	if err != nil || r.Etcd != "http://127.0.0.1:2379" || len(r.Flags) != 6 || r.Env["AWS_SECRET_ACCESS_KEY"] != "s" {
		t.Errorf("%+v %v", r, err)
	}
	for _, bad := range []string{"", "etcd http://127.0.0.1:2379\n", `{"etcd":"http://x"}`} {
		if _, err := parseDevclusterReady([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
