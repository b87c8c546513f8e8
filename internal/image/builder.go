package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

// builder is one image build in progress: the root tree it populates, the
// log its commands write to and the progress it reports.
type builder struct {
	s          *Store
	ctx        context.Context
	root, work string // the tree that becomes the image; scratch space beside it
	log        io.Writer
	logPath    string
	report     func(Progress)
	step       int
	steps      int
	phaseName  string
	proc       bool              // /proc is mounted in root
	contents   map[string]string // the image's manifest, when populate knows it
}

// phase starts the next phase of the build.
func (b *builder) phase(name string) {
	b.step++
	b.phaseName = name
	fmt.Fprintf(b.log, "\n=== [%d/%d] %s\n", b.step, b.steps, name)
	b.report(Progress{Step: b.step, Steps: b.steps, Phase: name, Log: b.logPath})
}

// count reports work done within the current phase.
func (b *builder) count(done, total int) {
	b.report(Progress{Step: b.step, Steps: b.steps, Phase: b.phaseName, Done: done, Total: total, Log: b.logPath})
}

// fetch gets a pinned download through the cache.
func (b *builder) fetch(d download) (string, error) {
	fmt.Fprintf(b.log, "fetch %s\n", d.URL)
	return b.s.fetch(b.ctx, d)
}

// counter looks at one line of output and says how much work it marks done
// (inc) and, when the line tells, how much there is in all (total > 0).
type counter func(line string) (inc, total int)

func countPrefixes(prefixes ...string) counter {
	return func(line string) (int, int) {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				return 1, 0
			}
		}
		return 0, 0
	}
}

var aptSummary = regexp.MustCompile(`^\d+ upgraded, (\d+) newly installed`)

// countApt counts apt-get install's "Unpacking" and "Setting up" lines
// against twice the number of packages its summary announces.
func countApt(line string) (int, int) {
	if m := aptSummary.FindStringSubmatch(line); m != nil {
		n, _ := strconv.Atoi(m[1])
		return 0, 2 * n
	}
	if strings.HasPrefix(line, "Unpacking ") || strings.HasPrefix(line, "Setting up ") {
		return 1, 0
	}
	return 0, 0
}

// runCounted runs a command with its output going to the build log,
// counting progress with c (nil: none). env nil means the current
// environment. A failure carries the last lines of output.
func (b *builder) runCounted(env []string, c counter, total int, name string, args ...string) error {
	_, err := b.runOut(env, c, total, name, args...)
	return err
}

func (b *builder) runOut(env []string, c counter, total int, name string, args ...string) (string, error) {
	fmt.Fprintf(b.log, "$ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(b.ctx, name, args...)
	cmd.Env = env
	var stdout strings.Builder
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = io.MultiWriter(pw, &stdout), pw
	var last []string // kept for the error message
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(b.log, line)
			if last = append(last, line); len(last) > 8 {
				last = last[1:]
			}
			if c != nil {
				inc, t := c(line)
				if t > 0 {
					total = t
				}
				if inc > 0 || t > 0 {
					n += inc
					b.count(n, total)
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return "", fmt.Errorf("%s: %w:\n%s", name, err, strings.Join(last, "\n"))
	}
	return stdout.String(), nil
}

// chrootEnv is the environment of commands run in the root being built.
func chrootEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
		"DEBIAN_FRONTEND=noninteractive", "LC_ALL=C", "LANG=C"}
}

// chroot runs a command in the root, with /proc mounted and services kept
// from starting.
func (b *builder) chroot(args ...string) error {
	_, err := b.chrootOutput(args...)
	return err
}

func (b *builder) chrootOutput(args ...string) (string, error) {
	if err := b.mountProc(); err != nil {
		return "", err
	}
	return b.runOut(chrootEnv(), nil, 0, "chroot", append([]string{b.root}, args...)...)
}

func (b *builder) mountProc() error {
	if b.proc {
		return nil
	}
	policy := filepath.Join(b.root, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		return err
	}
	proc := filepath.Join(b.root, "proc")
	if err := os.MkdirAll(proc, 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc in %s: %w", b.root, err)
	}
	b.proc = true
	return nil
}

// unmountProc undoes mountProc (the build calls it whatever happened).
func (b *builder) unmountProc() error {
	if !b.proc {
		return nil
	}
	os.Remove(filepath.Join(b.root, "usr/sbin/policy-rc.d"))
	if err := unix.Unmount(filepath.Join(b.root, "proc"), unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount proc in %s: %w", b.root, err)
	}
	b.proc = false
	return nil
}

// aptInstall installs pkgs in the root with apt-get, counting packages.
func (b *builder) aptInstall(pkgs []string) error {
	if err := b.mountProc(); err != nil {
		return err
	}
	if err := b.runCounted(chrootEnv(), nil, 0, "chroot", b.root, "apt-get", "update"); err != nil {
		return err
	}
	// The .debs of the last build are put where apt looks for them (it
	// checks each against the index and fetches only what is missing or
	// changed), and this build's are kept for the next.
	archives := filepath.Join(b.root, "var/cache/apt/archives")
	cache := filepath.Join(b.s.downloads(), "apt")
	if err := linkDebs(cache, archives); err != nil {
		return err
	}
	args := append([]string{b.root, "apt-get", "install", "-y", "--no-install-recommends"}, pkgs...)
	if err := b.runCounted(chrootEnv(), countApt, 0, "chroot", args...); err != nil {
		return err
	}
	os.RemoveAll(cache)
	return linkDebs(archives, cache)
}

// linkDebs hard-links (or, across filesystems, copies) the .deb files in
// from into to.
func linkDebs(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	debs, _ := filepath.Glob(filepath.Join(from, "*.deb"))
	for _, d := range debs {
		dst := filepath.Join(to, filepath.Base(d))
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := os.Link(d, dst); err == nil {
			continue
		}
		in, err := os.ReadFile(d)
		if err != nil {
			return err
		}
		tmp := dst + ".tmp"
		if err := os.WriteFile(tmp, in, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, dst); err != nil {
			return err
		}
	}
	return nil
}

// scratchDir is where root trees are built: Scratch, or tmp/ under Dir.
func (s *Store) scratchDir() string {
	if s.Scratch != "" {
		return s.Scratch
	}
	return filepath.Join(s.Dir, "tmp")
}

// CleanScratch removes the work dirs of builds that a crash cut short
// (nothing else in Scratch); the daemon calls it at start, before any build.
func (s *Store) CleanScratch() {
	dirs, _ := filepath.Glob(filepath.Join(s.scratchDir(), "root-*"))
	for _, d := range dirs {
		removeWork(s.log(), d)
	}
}

// downloads is where pinned downloads are cached.
func (s *Store) downloads() string {
	if s.Cache != "" {
		return s.Cache
	}
	return filepath.Join(s.Dir, "downloads")
}

// execAndDevices fails when dir's filesystem is mounted noexec or nodev:
// debootstrap makes device nodes and runs what it unpacks.
func execAndDevices(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	var bad []string
	if st.Flags&unix.ST_NODEV != 0 {
		bad = append(bad, "nodev")
	}
	if st.Flags&unix.ST_NOEXEC != 0 {
		bad = append(bad, "noexec")
	}
	if len(bad) > 0 {
		return fmt.Errorf("build dir %s is on a filesystem mounted %s; an image build needs device nodes and exec there (wispd --build-dir)", dir, strings.Join(bad, ","))
	}
	return nil
}

// removeWork removes a build's work dir, unmounting first whatever a
// failed step left mounted below it (debootstrap mounts /proc and /sys in
// its target); if something stays mounted, the dir is left alone rather
// than removed through the mount.
func removeWork(log *slog.Logger, work string) {
	if err := unmountUnder(work); err != nil {
		log.Error("image build leaves its work dir: a mount below it remains", "dir", work, "err", err)
		return
	}
	if err := os.RemoveAll(work); err != nil {
		log.Warn("remove image work dir", "dir", work, "err", err)
	}
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mnts []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			p := unescape(f[4])
			if p == dir || strings.HasPrefix(p, dir+"/") {
				mnts = append(mnts, p)
			}
		}
	}
	var errs []error
	for i := len(mnts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mnts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mnts[i], err))
		}
	}
	return errors.Join(errs...)
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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

// ValidateName checks the name of an image of one's own: like a sprite's,
// 1-40 of a-z, 0-9 and '-', starting with a letter.
func ValidateName(name string) error {
	if !imageName.MatchString(name) {
		return fmt.Errorf("image name %q: want 1-40 of a-z, 0-9 and '-', starting with a letter: %w: %w", name, ErrInvalidName, errdefs.ErrInvalid)
	}
	return nil
}

var imageName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,39}$`)

// ErrInvalidName means an image name is not allowed.
var ErrInvalidName = errors.New("invalid image name")
