package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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
}

// rootRecord is the meta.json stored next to a root image.
type rootRecord struct {
	Name      string    `json:"name"`
	BuiltAt   time.Time `json:"built_at"`
	SizeBytes int64     `json:"size_bytes"`
	SHA256    string    `json:"sha256"`
}

type rootDef struct {
	description string
	populate    func(ctx context.Context, root, work string, progress io.Writer) error
}

var rootDefs = map[string]rootDef{
	"minimal": {"busybox only; builds in seconds", populateMinimal},
	"dev":     {"Debian bookworm with build-essential, git, python3, nodejs, sudo", populateDev},
}

// Names lists the known images.
func Names() []string { return []string{"minimal", "dev"} }

func (s *Store) rootsDir() string { return filepath.Join(s.Dir, "roots") }

// builtDir returns the directory holding image name's root.ext4 and meta.json.
func (s *Store) builtDir(name string) (string, rootRecord, error) {
	if _, ok := rootDefs[name]; !ok {
		return "", rootRecord{}, fmt.Errorf("image %q: %w", name, ErrUnknown)
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(s.rootsDir(), name))
	var rec rootRecord
	if err == nil {
		err = readJSON(filepath.Join(dir, "meta.json"), &rec)
	}
	if errors.Is(err, fs.ErrNotExist) {
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

// List describes every known image, built or not.
func (s *Store) List() ([]Info, error) {
	var infos []Info
	for _, name := range Names() {
		info, err := s.info(name)
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

func (s *Store) info(name string) (Info, error) {
	info := Info{Name: name, Description: rootDefs[name].description}
	dir, rec, err := s.builtDir(name)
	switch {
	case errors.Is(err, ErrNotBuilt):
	case err != nil:
		return Info{}, err
	default:
		info.Built, info.Path = true, filepath.Join(dir, "root.ext4")
		info.SizeBytes, info.BuiltAt, info.SHA256 = rec.SizeBytes, rec.BuiltAt, rec.SHA256
	}
	return info, nil
}

// Build builds (or rebuilds) image name, writing progress lines to progress.
// The image and its meta are made in a work dir, moved to roots/.<name>-<id>
// and published by atomically swapping the roots/<name> symlink, so a crash
// leaves the old image or the new one. Builds of one name are serialised.
func (s *Store) Build(ctx context.Context, name string, progress io.Writer) (Info, error) {
	def, ok := rootDefs[name]
	if !ok {
		return Info{}, fmt.Errorf("image %q: %w", name, ErrUnknown)
	}
	defer s.lock("root/" + name)()
	start := time.Now()
	s.log().Info("building image", "image", name)
	if err := s.build(ctx, name, def, progress); err != nil {
		s.log().Error("image build failed", "image", name, "err", err)
		return Info{}, fmt.Errorf("build image %q: %w", name, err)
	}
	s.log().Info("image built", "image", name, "took", time.Since(start).Round(time.Millisecond))
	return s.info(name)
}

func (s *Store) build(ctx context.Context, name string, def rootDef, progress io.Writer) error {
	work, err := s.workDir("root-" + name)
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	if err := def.populate(ctx, root, work, progress); err != nil {
		return err
	}

	out := filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	img := filepath.Join(out, "root.ext4")
	size, inodes, err := ext4Size(root)
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "mkfs.ext4 %d MiB, %d inodes\n", size>>20, inodes)
	if _, err := run(ctx, "", "mkfs.ext4", "-q", "-F", "-d", root, "-L", "wisp-root", "-E", "root_owner=0:0", "-b", "4096", "-T", "default",
		"-N", strconv.FormatInt(inodes, 10), img, strconv.FormatInt(size>>10, 10)+"k"); err != nil {
		return err
	}
	sum, err := fileSHA256(img)
	if err != nil {
		return err
	}
	rec := rootRecord{Name: name, BuiltAt: time.Now().UTC(), SizeBytes: size, SHA256: sum}
	if err := writeJSONAtomic(filepath.Join(out, "meta.json"), rec); err != nil {
		return err
	}

	// Publish: move the finished dir next to the link, then swap the link.
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
	fmt.Fprintf(progress, "image %s: %d MiB\n", name, size>>20)
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
func populateMinimal(ctx context.Context, root, work string, progress io.Writer) error {
	fmt.Fprintln(progress, "downloading busybox-static")
	apt := aptOnce{progress: progress}
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
	fmt.Fprintf(progress, "busybox: %d applets\n", len(applets))

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

// devPackages are installed on top of a minbase debootstrap.
var devPackages = []string{
	"build-essential", "git", "curl", "ca-certificates", "python3", "nodejs", "npm",
	"sudo", "vim", "less", "procps", "iproute2", "openssh-client",
}

// populateDev debootstraps Debian bookworm, installs the development
// toolset and adds the sprite user with passwordless sudo.
//
// The packages are installed with apt inside the chroot rather than with
// debootstrap --include: debootstrap's resolver cannot configure npm's
// hundreds of node-* dependencies ("Failure while configuring base packages").
func populateDev(ctx context.Context, root, work string, progress io.Writer) error {
	mirror := aptMirror()
	fmt.Fprintf(progress, "debootstrap bookworm from %s\n", mirror)
	if err := runStream(ctx, progress, nil, "debootstrap", "--variant=minbase", "bookworm", root, mirror); err != nil {
		return err
	}
	if err := aptInstall(ctx, root, progress, devPackages); err != nil {
		return err
	}
	if _, err := run(ctx, "", "chroot", root, "useradd", "-m", "-u", "1000", "-U", "-G", "sudo", "-s", "/bin/bash", "sprite"); err != nil {
		return err
	}
	if err := writeFiles(root, map[string]string{
		"etc/hostname":    "sprite\n",
		"etc/resolv.conf": "nameserver 10.0.2.3\n",
	}); err != nil {
		return err
	}
	sudoers := filepath.Join(root, "etc/sudoers.d/sprite")
	if err := os.WriteFile(sudoers, []byte("sprite ALL=(ALL) NOPASSWD:ALL\n"), 0o440); err != nil {
		return err
	}
	if err := os.Chmod(sudoers, 0o440); err != nil { // umask-proof
		return err
	}
	fmt.Fprintln(progress, "apt clean")
	for _, g := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"} {
		m, _ := filepath.Glob(filepath.Join(root, g))
		for _, p := range m {
			if filepath.Base(p) == "partial" || filepath.Base(p) == "lock" {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// aptInstall runs apt-get install in the chroot at root with /proc mounted
// and services kept from starting.
func aptInstall(ctx context.Context, root string, progress io.Writer, pkgs []string) error {
	policy := filepath.Join(root, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		return err
	}
	defer os.Remove(policy)
	proc := filepath.Join(root, "proc")
	if _, err := run(ctx, "", "mount", "-t", "proc", "proc", proc); err != nil {
		return err
	}
	// Unmount even when ctx is cancelled, before the caller removes the tree.
	defer run(context.WithoutCancel(ctx), "", "umount", "-l", proc)

	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	fmt.Fprintf(progress, "apt-get install %s\n", strings.Join(pkgs, " "))
	if err := runStream(ctx, progress, env, "chroot", root, "apt-get", "update"); err != nil {
		return err
	}
	args := append([]string{root, "apt-get", "install", "-y", "--no-install-recommends"}, pkgs...)
	return runStream(ctx, progress, env, "chroot", args...)
}

// aptMirror returns the host's Debian mirror, from the first non-security
// URIs: line of debian.sources or deb line of sources.list.
func aptMirror() string {
	for _, src := range []struct{ path, prefix string }{
		{"/etc/apt/sources.list.d/debian.sources", "URIs:"},
		{"/etc/apt/sources.list", "deb "},
	} {
		f, err := os.Open(src.path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), src.prefix)
			if !ok {
				continue
			}
			for _, u := range strings.Fields(rest) {
				if strings.HasPrefix(u, "http") && !strings.Contains(u, "security") {
					f.Close()
					return u
				}
			}
		}
		f.Close()
	}
	return "http://deb.debian.org/debian"
}
