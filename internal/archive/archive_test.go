package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "d/e"), 0o755)
	os.WriteFile(filepath.Join(src, "d/e/f"), []byte("data"), 0o640)
	os.Symlink("e/f", filepath.Join(src, "d/link"))
	var b bytes.Buffer
	if err := Write(&b, filepath.Join(src, "d"), "top"); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	var made []string
	err := Extract(&b, dst, Options{
		Rename: func(n string) string { return strings.Replace(n, "top", "renamed", 1) },
		Made:   func(p string) error { made = append(made, p); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "renamed/e/f")); string(got) != "data" {
		t.Errorf("file: %q", got)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "renamed/link")); l != "e/f" {
		t.Errorf("link: %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "renamed/e/f")); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	if len(made) != 4 {
		t.Errorf("made %d paths: %v", len(made), made)
	}
}

type entry struct {
	name, link string
	typ        byte
	body       string
}

func tarOf(t testing.TB, es ...entry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		tw.WriteHeader(&tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))})
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return b.Bytes()
}

// TestHostile: nothing a tar says can write outside the destination.
func TestHostile(t *testing.T) {
	for name, es := range map[string][]entry{
		"dotdot":          {{name: "../../escape", typ: tar.TypeReg, body: "x"}},
		"absolute":        {{name: "/escape", typ: tar.TypeReg, body: "x"}},
		"through symlink": {{name: "l", link: "..", typ: tar.TypeSymlink}, {name: "l/escape", typ: tar.TypeReg, body: "x"}},
		"symlink abs":     {{name: "l", link: "/", typ: tar.TypeSymlink}, {name: "l/escape", typ: tar.TypeReg, body: "x"}},
		"file over link":  {{name: "escape", link: "../escape", typ: tar.TypeSymlink}, {name: "escape", typ: tar.TypeReg, body: "x"}},
	} {
		t.Run(name, func(t *testing.T) {
			outer := t.TempDir()
			dst := filepath.Join(outer, "a", "b")
			os.MkdirAll(dst, 0o755)
			err := Extract(bytes.NewReader(tarOf(t, es...)), dst, Options{})
			if _, serr := os.Stat(filepath.Join(outer, "a", "escape")); serr == nil {
				t.Fatalf("wrote outside the destination (err %v)", err)
			}
			if _, serr := os.Stat("/escape"); serr == nil {
				t.Fatal("wrote /escape")
			}
			if err != nil && !errors.Is(err, ErrUnsafe) {
				t.Logf("refused with %v", err)
			}
		})
	}
}

// FuzzExtract unpacks arbitrary bytes: nothing may appear outside dst.
func FuzzExtract(f *testing.F) {
	f.Add(tarOf(f, entry{name: "a/b", typ: tar.TypeReg, body: "x"}))
	f.Add(tarOf(f, entry{name: "l", link: "..", typ: tar.TypeSymlink}, entry{name: "l/x", typ: tar.TypeReg, body: "x"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		outer := t.TempDir()
		dst := filepath.Join(outer, "dst")
		os.Mkdir(dst, 0o755)
		Extract(bytes.NewReader(data), dst, Options{})
		ents, _ := os.ReadDir(outer)
		if len(ents) != 1 {
			t.Fatalf("entries outside dst: %v", ents)
		}
	})
}
