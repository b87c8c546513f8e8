package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Info describes a root image.
type Info struct {
	Name        string    `json:"name"`
	Built       bool      `json:"built"`
	Path        string    `json:"path,omitempty"`       // the root image (raw ext4 file)
	SizeBytes   int64     `json:"size_bytes,omitempty"` // apparent size of the ext4 file
	BuiltAt     time.Time `json:"built_at,omitempty"`
	SHA256      string    `json:"sha256,omitempty"`
	Description string    `json:"description"`
	// Contents names what the image holds and at which version
	// ("claude": "2.1.332", "python3": "3.11.2").
	Contents map[string]string `json:"contents,omitempty"`
	// BuildSeconds is how long the last build took.
	BuildSeconds float64 `json:"build_seconds,omitempty"`
	// Recipe is how an image of one's own was made (see Recipe).
	Recipe *Recipe `json:"recipe,omitempty"`
	// Key identifies the built-in recipe it was built from; a build from
	// a changed recipe has another key (see RecipeKey).
	Key string `json:"key,omitempty"`
}

// rootRecord is the meta.json stored next to a root image.
type rootRecord struct {
	Name         string            `json:"name"`
	BuiltAt      time.Time         `json:"built_at"`
	SizeBytes    int64             `json:"size_bytes"`
	SHA256       string            `json:"sha256"`
	Contents     map[string]string `json:"contents,omitempty"`
	BuildSeconds float64           `json:"build_seconds,omitempty"`
	Description  string            `json:"description,omitempty"`
	Recipe       *Recipe           `json:"recipe,omitempty"`
	Key          string            `json:"key,omitempty"`
}

type rootDef struct {
	description string
	phases      int  // phases populate reports
	debootstrap bool // needs device nodes and exec where it builds
	populate    func(b *builder) error
}

var rootDefs = map[string]rootDef{
	"minimal": {"busybox only; builds in seconds", 1, false, populateMinimal},
	"dev":     {devDescription, 7, true, populateDev},
}

// recipeRevision changes whenever a built-in recipe changes in a way its
// pins and package list do not show.
const recipeRevision = "2026-11-30.1"

// RecipeKey identifies what building the built-in image name makes today:
// tests that cache an image rebuild it when the key changes.
func RecipeKey(name string) string {
	h := sha256.New()
	fmt.Fprintln(h, recipeRevision, name)
	if name == "dev" {
		fmt.Fprintln(h, nodeDownload, npmDownload, claudeDownload, claudeNativeDownload, goDownload, devPackages)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Names lists the built-in images.
func Names() []string { return []string{"minimal", "dev"} }

func (s *Store) rootsDir() string { return filepath.Join(s.Dir, "roots") }

// builtDir returns the directory holding image name's root.ext4 and meta.json.
func (s *Store) builtDir(name string) (string, rootRecord, error) {
	_, builtin := rootDefs[name]
	if !builtin {
		if err := ValidateName(name); err != nil {
			return "", rootRecord{}, err
		}
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(s.rootsDir(), name))
	var rec rootRecord
	if err == nil {
		err = readJSON(filepath.Join(dir, "meta.json"), &rec)
	}
	if errors.Is(err, fs.ErrNotExist) {
		if !builtin {
			return "", rootRecord{}, fmt.Errorf("image %q: %w", name, ErrUnknown)
		}
		return "", rootRecord{}, fmt.Errorf("image %q: %w", name, ErrNotBuilt)
	}
	if err != nil {
		return "", rootRecord{}, fmt.Errorf("image %q: %w", name, err)
	}
	dir, err = filepath.Abs(dir)
	return dir, rec, err
}

// Root returns the path of the built root image name. The error wraps
// ErrUnknown or ErrNotBuilt. A later Build replaces the image at a new path.
func (s *Store) Root(name string) (string, error) {
	dir, _, err := s.builtDir(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "root.ext4"), nil
}

// List describes every image: the built-in ones, built or not, then the
// images of one's own, by name.
func (s *Store) List() ([]Info, error) {
	names := Names()
	links, _ := os.ReadDir(s.rootsDir())
	for _, l := range links {
		n := l.Name()
		if _, builtin := rootDefs[n]; !builtin && !strings.HasPrefix(n, ".") && ValidateName(n) == nil {
			names = append(names, n)
		}
	}
	var infos []Info
	for _, name := range names {
		info, err := s.Info(name)
		if errors.Is(err, ErrUnknown) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// Info describes image name; the error wraps ErrUnknown for a name that
// is neither built in nor built.
func (s *Store) Info(name string) (Info, error) {
	info := Info{Name: name, Description: rootDefs[name].description}
	dir, rec, err := s.builtDir(name)
	switch {
	case errors.Is(err, ErrNotBuilt):
	case err != nil:
		return Info{}, err
	default:
		info.Built, info.Path = true, filepath.Join(dir, "root.ext4")
		info.SizeBytes, info.BuiltAt, info.SHA256 = rec.SizeBytes, rec.BuiltAt, rec.SHA256
		info.Contents, info.BuildSeconds, info.Recipe, info.Key = rec.Contents, rec.BuildSeconds, rec.Recipe, rec.Key
		if rec.Description != "" {
			info.Description = rec.Description
		}
	}
	return info, nil
}

// Progress is one report of an image build: the phase it is in (Step of
// Steps) and, where the phase can count its work, how far it got (Done of
// Total; Total 0 when unknown).
type Progress struct {
	Step  int    `json:"step"`
	Steps int    `json:"steps"`
	Phase string `json:"phase"`
	Done  int    `json:"done,omitempty"`
	Total int    `json:"total,omitempty"`
	// Log is the file the build's command output goes to.
	Log string `json:"log,omitempty"`
}

// Build builds (or rebuilds) image name, calling report (which may be
// nil) as it goes. The root tree is made in a work dir under Scratch (a
// filesystem that allows device nodes and exec), the finished image under
// Dir; it is moved to roots/.<name>-<id> and published by atomically
// swapping the roots/<name> symlink, so a crash leaves the old image or the
// new one, and a failure leaves nothing. The output of the commands it runs
// goes to logs/<name>.log under Dir, which a failure names. Builds of one
// name are serialised.
func (s *Store) Build(ctx context.Context, name string, report func(Progress)) (Info, error) {
	def, ok := rootDefs[name]
	if !ok {
		return Info{}, fmt.Errorf("image %q: %w", name, ErrUnknown)
	}
	if report == nil {
		report = func(Progress) {}
	}
	defer s.lock("root/" + name)()
	start := time.Now()
	s.log().Info("building image", "image", name)
	if err := s.build(ctx, name, def, report); err != nil {
		s.log().Error("image build failed", "image", name, "err", err)
		return Info{}, fmt.Errorf("build image %q: %w", name, err)
	}
	s.log().Info("image built", "image", name, "took", time.Since(start).Round(time.Millisecond))
	return s.Info(name)
}

func (s *Store) build(ctx context.Context, name string, def rootDef, report func(Progress)) error {
	start := time.Now()
	scratch := s.scratchDir()
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return err
	}
	if def.debootstrap {
		if err := execAndDevices(scratch); err != nil {
			return err
		}
	}
	work, err := os.MkdirTemp(scratch, "root-"+name+"-")
	if err != nil {
		return err
	}
	defer removeWork(s.log(), work)
	logs := filepath.Join(s.Dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(logs, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	b := &builder{s: s, ctx: ctx, root: filepath.Join(work, "rootfs"), work: work, log: logf, logPath: logPath,
		report: report, steps: def.phases + 2}
	if err := os.Mkdir(b.root, 0o755); err != nil {
		return err
	}
	err = def.populate(b)
	if uerr := b.unmountProc(); err == nil {
		err = uerr
	}
	if err != nil {
		return fmt.Errorf("%w (log: %s)", err, logPath)
	}
	b.phase("make the ext4 filesystem")
	// The image is written into the cache dir (in the storage pool), so
	// sprite disks can be reflinks of it.
	out, err := s.workDir("out-" + name)
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	img := filepath.Join(out, "root.ext4")
	size, inodes, err := ext4Size(b.root)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "mkfs.ext4 %d MiB, %d inodes\n", size>>20, inodes)
	if _, err := run(ctx, "", "mkfs.ext4", "-q", "-F", "-d", b.root, "-L", "wisp-root", "-E", "root_owner=0:0", "-b", "4096", "-T", "default",
		"-N", strconv.FormatInt(inodes, 10), img, strconv.FormatInt(size>>10, 10)+"k"); err != nil {
		return err
	}
	sum, err := fileSHA256(img)
	if err != nil {
		return err
	}
	b.phase("publish")
	rec := rootRecord{Name: name, BuiltAt: time.Now().UTC(), SizeBytes: size, SHA256: sum, Contents: b.contents, Key: RecipeKey(name),
		BuildSeconds: time.Since(start).Round(100 * time.Millisecond).Seconds()}
	if err := writeJSONAtomic(filepath.Join(out, "meta.json"), rec); err != nil {
		return err
	}
	return s.publish(name, out)
}

// publish moves the finished dir out (holding root.ext4 and meta.json)
// next to the roots/<name> link, swaps the link to it and removes older
// builds of name.
func (s *Store) publish(name, out string) error {
	roots := s.rootsDir()
	if err := os.MkdirAll(roots, 0o755); err != nil {
		return err
	}
	target := fmt.Sprintf(".%s-%d", name, time.Now().UnixNano())
	if err := os.Rename(out, filepath.Join(roots, target)); err != nil {
		return err
	}
	tmpLink := filepath.Join(roots, "."+name+".link")
	os.Remove(tmpLink)
	if err := os.Symlink(target, tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(roots, name)); err != nil {
		return err
	}
	// Remove older builds (and leftovers of crashed ones) of this name.
	old, _ := filepath.Glob(filepath.Join(roots, "."+name+"-*"))
	for _, o := range old {
		if filepath.Base(o) != target {
			os.RemoveAll(o)
		}
	}
	return nil
}

// ext4Size returns an image size for the tree at root (content plus 30%
// headroom, at least 64 MiB, in whole MiB) and an inode count with headroom.
func ext4Size(root string) (size, inodes int64, err error) {
	const block = 4096
	var used int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		inodes++
		used += 256 // inode table entry
		if d.Type().IsRegular() || d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			used += (fi.Size() + block - 1) / block * block
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	size = used * 13 / 10
	size = max(size, 64<<20)
	size = (size + 1<<20 - 1) >> 20 << 20
	return size, max(inodes*13/10, 4096), nil
}

func writeFiles(root string, files map[string]string) error {
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		os.Remove(p) // may be a symlink (resolv.conf)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// populateMinimal makes a busybox root: /bin/busybox with its applet links,
// the usual top-level dirs, root and sprite (1000) users.
func populateMinimal(b *builder) error {
	ctx, root, work := b.ctx, b.root, b.work
	b.phase("busybox from Debian")
	apt := aptOnce{progress: b.log}
	deb, err := apt.download(ctx, work, "busybox-static")
	if err != nil {
		return err
	}
	x := filepath.Join(work, "busybox")
	if _, err := run(ctx, "", "dpkg-deb", "-x", deb, x); err != nil {
		return err
	}
	bin := filepath.Join(root, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	bb, err := os.ReadFile(filepath.Join(x, "bin", "busybox"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), bb, 0o755); err != nil {
		return err
	}
	list, err := run(ctx, "", filepath.Join(bin, "busybox"), "--list")
	if err != nil {
		return err
	}
	applets := strings.Fields(string(list))
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(bin, a)); err != nil {
			return err
		}
	}
	fmt.Fprintf(b.log, "busybox: %d applets\n", len(applets))
	// busybox-static_1%3a1.35.0-4+b3_amd64.deb
	if _, v, ok := strings.Cut(filepath.Base(deb), "_"); ok {
		v, _, _ = strings.Cut(v, "_")
		v = strings.ReplaceAll(v, "%3a", ":")
		b.contents = map[string]string{"busybox": debVersion(v)}
	}

	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "root", "home/sprite", "etc", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for _, d := range []string{"tmp", "var/tmp"} {
		if err := os.Chmod(filepath.Join(root, d), 0o1777); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "root"), 0o700); err != nil {
		return err
	}
	if err := os.Chown(filepath.Join(root, "home/sprite"), 1000, 1000); err != nil {
		return err
	}
	return writeFiles(root, map[string]string{
		"etc/passwd":      "root:x:0:0:root:/root:/bin/sh\nsprite:x:1000:1000:sprite:/home/sprite:/bin/sh\n",
		"etc/group":       "root:x:0:\nsprite:x:1000:\n",
		"etc/hostname":    "sprite\n",
		"etc/os-release":  "NAME=\"wisp minimal\"\nID=wisp-minimal\nPRETTY_NAME=\"wisp minimal (busybox)\"\n",
		"etc/resolv.conf": "nameserver 10.0.2.3\n",
	})
}
