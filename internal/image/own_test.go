package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

func TestOwnImages(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	fill := func(content string) func(string) error {
		return func(dst string) error { return os.WriteFile(dst, []byte(content), 0o644) }
	}
	for _, name := range []string{"dev", "minimal", "Bad", "", "-x"} {
		if _, err := s.Save(name, Recipe{From: "dev"}, fill("x")); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Save(%q) = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.Save("broken", Recipe{From: "dev"}, func(string) error { return errors.New("boom") }); err == nil {
		t.Fatal("Save with a failing fill succeeded")
	}
	if _, err := s.Root("broken"); !errors.Is(err, ErrUnknown) {
		t.Errorf("a failed save left an image: %v", err)
	}
	info, err := s.Save("mine", Recipe{From: "dev", Run: []string{"make"}}, fill("one"))
	if err != nil {
		t.Fatal(err)
	}
	if !info.Built || info.Recipe == nil || info.Recipe.Run[0] != "make" || info.SizeBytes != 3 {
		t.Errorf("info %+v", info)
	}
	if _, err := s.Save("mine", Recipe{From: "mine"}, fill("second")); err != nil {
		t.Fatal(err)
	}
	root, _ := s.Root("mine")
	if b, _ := os.ReadFile(root); string(b) != "second" {
		t.Errorf("replaced image holds %q", b)
	}
	list, err := s.List()
	var names []string
	for _, i := range list {
		names = append(names, i.Name)
	}
	if err != nil || !slices.Equal(names, []string{"minimal", "dev", "mine"}) {
		t.Errorf("List = %v, %v", names, err)
	}
	if err := s.Remove("dev"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Remove(dev) = %v", err)
	}
	if err := s.Remove("mine"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("mine"); !errors.Is(err, ErrUnknown) || !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second Remove = %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir, "roots")); len(ents) != 0 {
		t.Errorf("roots/ after remove: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ after saves: %v", ents)
	}
}

func tgz(t *testing.T, files map[string]string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestDownloadVerifyAndUntar(t *testing.T) {
	dir := t.TempDir()
	data := tgz(t, map[string]string{"package/bin/node": "elf", "package/README.md": "hi"})
	p := filepath.Join(dir, "x.tgz")
	os.WriteFile(p, data, 0o644)
	sum := sha512.Sum512(data)
	good := download{URL: "https://example.invalid/x.tgz", SRI: "sha512-" + base64.StdEncoding.EncodeToString(sum[:])}
	if err := good.verify(p); err != nil {
		t.Errorf("verify: %v", err)
	}
	bad := good
	bad.SRI = "sha512-" + base64.StdEncoding.EncodeToString(make([]byte, 64))
	if err := bad.verify(p); err == nil {
		t.Errorf("a wrong hash verified")
	}
	if err := (download{URL: good.URL}).verify(p); err == nil {
		t.Errorf("a download without a pinned hash verified")
	}
	out := filepath.Join(dir, "out")
	if err := untarGz(p, out, 1); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "bin/node")); err != nil || string(b) != "elf" {
		t.Errorf("bin/node: %q %v", b, err)
	}
	// Names that climb out stay inside (os.Root).
	evil := filepath.Join(dir, "evil.tgz")
	os.WriteFile(evil, tgz(t, map[string]string{"package/../../../escape": "x"}), 0o644)
	untarGz(evil, filepath.Join(dir, "out2"), 1)
	if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
		t.Errorf("a tar entry escaped the target")
	}
}

func TestCountersAndVersions(t *testing.T) {
	total, done := 0, 0
	for _, line := range []string{"Reading package lists...", "0 upgraded, 3 newly installed, 0 to remove and 0 not upgraded.",
		"Unpacking a (1) ...", "Unpacking b (1) ...", "Setting up a (1) ...", "Processing triggers"} {
		inc, tot := countApt(line)
		done += inc
		if tot > 0 {
			total = tot
		}
	}
	if total != 6 || done != 3 {
		t.Errorf("apt counted %d of %d, want 3 of 6", done, total)
	}
	for in, want := range map[string]string{"1:2.39.5-0+deb12u3": "2.39.5", "3.11.2-1+b1": "3.11.2", "4:12.2.0-3": "12.2.0", "3.3a-3": "3.3a", "1.9.13p3-1+deb12u4": "1.9.13p3"} {
		if got := debVersion(in); got != want {
			t.Errorf("debVersion(%q) = %q, want %q", in, got, want)
		}
	}
	if RecipeKey("dev") == RecipeKey("minimal") || RecipeKey("dev") != RecipeKey("dev") {
		t.Errorf("recipe keys do not tell images apart")
	}
}

func TestBuildDirMustAllowDevices(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounts a tmpfs")
	}
	dir := t.TempDir()
	if err := execAndDevices(dir); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	if err := mountTmpfs(dir, "nodev"); err != nil {
		t.Skip(err)
	}
	defer unmountUnder(dir)
	s := &Store{Dir: t.TempDir(), Scratch: dir}
	_, err := s.Build(t.Context(), "dev", nil)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("nodev")) {
		t.Errorf("build in a nodev dir: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a refused build left %v", ents)
	}
}

// mountTmpfs mounts a small tmpfs with opts on dir.
func mountTmpfs(dir, opts string) error {
	flags := uintptr(0)
	if strings.Contains(opts, "nodev") {
		flags |= unix.MS_NODEV
	}
	return unix.Mount("tmpfs", dir, "tmpfs", flags, "size=1m")
}
