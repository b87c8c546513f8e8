package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// The workload bench runs the same real work on the host and in a fresh
// sprite, step by step and back to back (host run i, then sprite run i),
// and prints sprite/host ratios. The first run of a step is its cold
// sample (empty build cache, first touch of the tree), the median of the
// others its warm one.

// Pinned inputs: the standard-library packages of the Go step and the npm
// project's dependencies (fetched once on the host into a local cache,
// which both sides install from, offline).
const (
	defaultGoPkgs = "sort strconv unicode/utf8"
	npmMocha      = "10.8.2"
	npmSemver     = "7.6.3"
	fileTreeSize  = 50000
)

// step is one measured command of a workload, a shell script run in the
// workload's directory ($W) on each side.
type step struct {
	name   string
	script string
	once   bool // measured once per side (it makes what later steps use)
}

// WorkloadMetric is one step's samples on both sides.
type WorkloadMetric struct {
	Name         string    `json:"name"`
	HostSamples  []float64 `json:"host_samples_s"`
	SpriteSample []float64 `json:"sprite_samples_s"`
	HostCold     float64   `json:"host_cold_s"`
	SpriteCold   float64   `json:"sprite_cold_s"`
	RatioCold    float64   `json:"ratio_cold"`
	HostWarm     float64   `json:"host_warm_s,omitempty"` // p50 of the runs after the first
	SpriteWarm   float64   `json:"sprite_warm_s,omitempty"`
	RatioWarm    float64   `json:"ratio_warm,omitempty"`
}

// WorkloadReport is what `wisp bench workload --json` prints.
type WorkloadReport struct {
	Backend    string           `json:"backend"`
	Accel      string           `json:"accel"`
	Image      string           `json:"image"`
	CPUs       int              `json:"cpus"`
	MemoryMiB  int              `json:"memory_mib"`
	Runs       int              `json:"runs"`
	At         time.Time        `json:"at"`
	Machine    string           `json:"machine"`
	HostPinned string           `json:"host_pinned"` // how the host side is held to the sprite's CPUs
	LoadStart  string           `json:"load_start"`  // /proc/loadavg
	LoadEnd    string           `json:"load_end"`
	HostGo     string           `json:"host_go,omitempty"`
	SpriteGo   string           `json:"sprite_go,omitempty"`
	HostNode   string           `json:"host_node,omitempty"` // node and npm versions
	SpriteNode string           `json:"sprite_node,omitempty"`
	Metrics    []WorkloadMetric `json:"metrics"`
}

func newBenchWorkload(e *env) *cobra.Command {
	var runs, cpus, mem int
	var asJSON bool
	var out, backend, img, only, goPkgs, keep, pin string
	c := &cobra.Command{
		Use:   "workload",
		Short: "Real builds, tests and file passes in a sprite against the host: ratios",
		Long: `Run the same real workloads on this host (held to as many CPUs as the sprite
has: a cgroup with the same CPU quota as the sprite's, or taskset) and in a fresh sprite, back to back, and print the
sprite/host ratio of each step, cold (first run) and warm (median of the
others):

  go     go test -short of pinned standard-library packages (the sprite's Go
         and the host's must be the same version): cold with an empty build
         cache, warm with it filled
  npm    npm ci, offline, from a local cache of a pinned project (mocha
         ` + npmMocha + `, semver ` + npmSemver + `, fetched once on the host), then its mocha test run
  files  a generated tree of 50,000 files: create and git commit it (once),
         then git status and grep -r over it

The bench must run on the daemon's host, with Go, node/npm, git and python3.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runs < 2 || runs > 50 {
				return fmt.Errorf("--runs %d: want 2-50 (the first run is the cold one)", runs)
			}
			list := []string{backend}
			if backend == "both" {
				list = []string{"gvisor", "qemu"}
			}
			var reports []WorkloadReport
			for _, b := range list {
				r, err := runWorkloads(cmd.Context(), e, workloadOpts{backend: b, image: img, runs: runs, cpus: cpus, mem: mem, only: only, goPkgs: goPkgs, keep: keep, pin: pin})
				if err != nil {
					return fmt.Errorf("bench workload %s: %w", b, err)
				}
				reports = append(reports, r)
				if !asJSON {
					printWorkload(e.stdout, r)
				}
			}
			var v any = reports
			if len(reports) == 1 {
				v = reports[0]
			}
			if out != "" {
				b, _ := json.MarshalIndent(v, "", "  ")
				if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(e.stdout, v)
			}
			return nil
		},
	}
	f := c.Flags()
	f.IntVar(&runs, "runs", 3, "runs of each step on each side (the first is the cold one)")
	f.IntVar(&cpus, "cpus", 1, "cpus of the sprite, and of the host's pinning")
	f.IntVar(&mem, "memory", 2048, "memory of the sprite in MiB")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&out, "out", "", "also write the JSON report to this file")
	f.StringVar(&backend, "backend", "", "backend to measure: qemu, gvisor or both (default: the daemon's)")
	f.StringVar(&img, "image", "dev", "image of the sprite (it needs go, node, npm, git, python3)")
	f.StringVar(&only, "only", "go,npm,files", "workloads to run, comma-separated")
	f.StringVar(&goPkgs, "go-pkgs", defaultGoPkgs, "standard-library packages of the go workload")
	f.StringVar(&pin, "pin", "quota", "how the host side gets the sprite's CPUs: quota (a cgroup with the sprite's CPU quota, as a sprite has), taskset (pinned to CPUs 0..N-1) or none")
	f.StringVar(&keep, "sprite", "", "use this existing sprite instead of a fresh one (it is not destroyed)")
	return c
}

type workloadOpts struct {
	backend, image  string
	runs, cpus, mem int
	only, goPkgs    string
	keep, pin       string
}

// side runs a step's script on the host or in the sprite and times it.
type side interface {
	run(ctx context.Context, script string) (time.Duration, string, error)
}

type hostSide struct {
	dir    string
	pinned string // taskset CPU list
	procs  string // cgroup.procs of a CPU-quota cgroup
}

func (h *hostSide) run(ctx context.Context, script string) (time.Duration, string, error) {
	argv := []string{"sh", "-ec", script}
	switch {
	case h.procs != "":
		// Into the cgroup, then the script.
		argv = []string{"sh", "-c", `echo $$ > "$1" && exec sh -ec "$0"`, script, h.procs}
	case h.pinned != "":
		argv = append([]string{"taskset", "-c", h.pinned}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = h.dir
	cmd.Env = append(os.Environ(), "W="+h.dir, "GOCACHE="+h.dir+"/gocache", "GOPATH="+h.dir+"/gopath",
		"GOTOOLCHAIN=local", "GOFLAGS=", "npm_config_update_notifier=false", "HOME="+h.dir+"/home")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, out.String(), fmt.Errorf("host: %w: %s", err, tail(out.String()))
	}
	return d, out.String(), nil
}

type spriteSide struct {
	s   *client.Sprite
	dir string
}

func (s *spriteSide) run(ctx context.Context, script string) (time.Duration, string, error) {
	cmd := s.s.CommandContext(ctx, "sh", "-ec", script)
	cmd.Dir = s.dir
	cmd.Env = []string{"W=" + s.dir, "GOCACHE=" + s.dir + "/gocache", "GOPATH=" + s.dir + "/gopath",
		"GOTOOLCHAIN=local", "GOFLAGS=", "npm_config_update_notifier=false", "HOME=" + s.dir + "/home"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, out.String(), fmt.Errorf("sprite: %w: %s", err, tail(out.String()))
	}
	return d, out.String(), nil
}

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 800 {
		s = "..." + s[len(s)-800:]
	}
	return s
}

func runWorkloads(ctx context.Context, e *env, o workloadOpts) (WorkloadReport, error) {
	c := e.client()
	progress := func(format string, a ...any) { fmt.Fprintf(e.stderr, "bench workload: "+format+"\n", a...) }
	rep := WorkloadReport{Image: o.image, Runs: o.runs, CPUs: o.cpus, MemoryMiB: o.mem, At: time.Now().UTC(), Machine: machine(), LoadStart: loadavg()}

	hdir, err := os.MkdirTemp("", "wisp-workload-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(hdir)
	name := o.keep
	if name == "" {
		tag := make([]byte, 3)
		rand.Read(tag)
		name = "bench-wl-" + hex.EncodeToString(tag)
		t0 := time.Now()
		sp, err := c.Create(ctx, api.CreateRequest{Name: name, Image: o.image, Backend: o.backend, CPUs: o.cpus, MemoryMiB: o.mem, IdleSeconds: -1})
		if err != nil {
			return rep, err
		}
		defer c.Sprite(name).Destroy(context.WithoutCancel(ctx))
		progress("created %s (%s/%s) in %s", name, sp.Backend, sp.Accel, time.Since(t0).Round(time.Millisecond))
	}
	sp, err := c.Sprite(name).Info(ctx)
	if err != nil {
		return rep, err
	}
	rep.Backend, rep.Accel, rep.CPUs, rep.MemoryMiB = sp.Backend, sp.Accel, sp.CPUs, sp.MemoryMiB
	host := &hostSide{dir: hdir}
	switch o.pin {
	case "quota":
		// The sprite's CPU quota as its VMM's cgroup has it (which may be
		// none: then only the grouping), else its cpus.
		quota, known := vmmQuota(sp.Pid)
		if !known {
			quota = sp.CPUs * 100000
		}
		procs, undo, err := cpuQuota(quota)
		if err != nil {
			return rep, fmt.Errorf("--pin quota: %w (try --pin taskset)", err)
		}
		defer undo()
		host.procs, rep.HostPinned = procs, fmt.Sprintf("a cgroup with the sprite's CPU quota (%s)", quotaText(quota))
		if quota < 0 {
			progress("note: the sprite's cgroup has no CPU quota (it may use every CPU): the host side has none either")
		}
	case "taskset":
		if _, err := exec.LookPath("taskset"); err != nil {
			return rep, fmt.Errorf("--pin taskset: %w", err)
		}
		host.pinned = fmt.Sprintf("0-%d", o.cpus-1)
		if o.cpus == 1 {
			host.pinned = "0"
		}
		rep.HostPinned = "taskset " + host.pinned
	case "none":
	default:
		return rep, fmt.Errorf("--pin %q: want quota, taskset or none", o.pin)
	}

	const sdir = "/home/sprite/workload"
	guest := &spriteSide{s: c.Sprite(name), dir: sdir}
	// The sprite's work directory, as its user (and emptied, in a sprite
	// given with --sprite).
	if out, err := c.Sprite(name).CommandContext(ctx, "sh", "-c", "rm -rf "+sdir+" && mkdir -p "+sdir+"/home").CombinedOutput(); err != nil {
		return rep, fmt.Errorf("make %s: %w %s", sdir, err, out)
	}
	os.MkdirAll(hdir+"/home", 0o755)

	var metrics []WorkloadMetric
	for _, w := range strings.Split(o.only, ",") {
		var steps []step
		switch strings.TrimSpace(w) {
		case "go":
			_, hgo, err := host.run(ctx, "go version")
			if err != nil {
				return rep, fmt.Errorf("go on the host: %w", err)
			}
			_, sgo, err := guest.run(ctx, "go version")
			if err != nil {
				return rep, fmt.Errorf("go in the sprite: %w", err)
			}
			rep.HostGo, rep.SpriteGo = strings.TrimSpace(hgo), strings.TrimSpace(sgo)
			if strings.Fields(rep.HostGo + " x x")[2] != strings.Fields(rep.SpriteGo + " x x")[2] {
				progress("warning: Go versions differ (host %q, sprite %q): the build work differs", rep.HostGo, rep.SpriteGo)
			}
			steps = goSteps(o.goPkgs)
		case "npm":
			const versions = `echo "node $(node --version), npm $(npm --version)"`
			_, hn, _ := host.run(ctx, versions)
			_, sn, _ := guest.run(ctx, versions)
			rep.HostNode, rep.SpriteNode = strings.TrimSpace(hn), strings.TrimSpace(sn)
			if rep.HostNode != rep.SpriteNode {
				progress("note: node differs (host %s, sprite %s): the npm steps compare different runtimes", rep.HostNode, rep.SpriteNode)
			}
			if err := prepareNPM(ctx, host, guest, progress); err != nil {
				return rep, fmt.Errorf("npm: %w", err)
			}
			steps = npmSteps()
		case "files":
			steps = fileSteps()
		case "":
			continue
		default:
			return rep, fmt.Errorf("--only: unknown workload %q (want go, npm, files)", w)
		}
		for _, st := range steps {
			m, err := measureStep(ctx, st, o.runs, host, guest, progress)
			if err != nil {
				return rep, fmt.Errorf("%s: %w", st.name, err)
			}
			metrics = append(metrics, m)
		}
	}
	rep.Metrics = metrics
	rep.LoadEnd = loadavg()
	return rep, nil
}

func measureStep(ctx context.Context, st step, runs int, host, guest side, progress func(string, ...any)) (WorkloadMetric, error) {
	m := WorkloadMetric{Name: st.name}
	n := runs
	if st.once {
		n = 1
	}
	for i := range n {
		hd, _, err := host.run(ctx, st.script)
		if err != nil {
			return m, err
		}
		sd, _, err := guest.run(ctx, st.script)
		if err != nil {
			return m, err
		}
		m.HostSamples = append(m.HostSamples, hd.Seconds())
		m.SpriteSample = append(m.SpriteSample, sd.Seconds())
		progress("%-16s run %d/%d: host %6.2fs  sprite %6.2fs  (%.2fx)  load %s", st.name, i+1, n, hd.Seconds(), sd.Seconds(), sd.Seconds()/hd.Seconds(), loadavg())
	}
	m.HostCold, m.SpriteCold = m.HostSamples[0], m.SpriteSample[0]
	m.RatioCold = m.SpriteCold / m.HostCold
	if len(m.HostSamples) > 1 {
		m.HostWarm, m.SpriteWarm = quantile(m.HostSamples[1:], 0.5), quantile(m.SpriteSample[1:], 0.5)
		m.RatioWarm = m.SpriteWarm / m.HostWarm
	}
	return m, nil
}

// goSteps: a go test of standard-library packages. The first run has an
// empty build cache (cold), the next ones reuse it (warm); -count=1 so that
// the tests run each time.
func goSteps(pkgs string) []step {
	return []step{{name: "go_test", script: `if [ ! -e "$W/.gowarm" ]; then rm -rf "$GOCACHE"; touch "$W/.gowarm"; fi
go test -short -count=1 ` + pkgs + ` >/dev/null`}}
}

func npmSteps() []step {
	return []step{
		{name: "npm_ci", script: `cd "$W/npm" && rm -rf node_modules && npm ci --offline --cache "$W/npmcache" --no-audit --no-fund --loglevel=error >/dev/null`},
		{name: "npm_test", script: `cd "$W/npm" && npx --offline mocha --reporter dot >/dev/null`},
	}
}

// fileSteps: a tree of 500 directories of 100 small files each (made by
// python3, committed to git once), then git status and grep -r over it.
func fileSteps() []step {
	gen := fmt.Sprintf(`rm -rf "$W/tree" && mkdir -p "$W/tree" && cd "$W/tree" && python3 - <<'EOF'
import os
n = %d
for d in range(n // 100):
    os.mkdir("d%%03d" %% d)
    for f in range(100):
        with open("d%%03d/f%%03d.txt" %% (d, f), "w") as fh:
            fh.write("file %%d %%d\n" %% (d, f) + "lorem ipsum dolor sit amet\n" * 8 + ("needle\n" if f == 7 else ""))
EOF
git init -q . && git add -A && git -c user.email=bench@wisp -c user.name=bench commit -qm tree`, fileTreeSize)
	return []step{
		{name: "files_create_commit", script: gen, once: true},
		{name: "git_status", script: `cd "$W/tree" && git status --porcelain >/dev/null`},
		{name: "grep_r", script: `cd "$W/tree" && test "$(grep -rl needle . --exclude-dir=.git | wc -l)" -eq 500`},
	}
}

// prepareNPM makes the pinned project and its local cache on the host (the
// only step that uses the npm registry) and copies both into the sprite.
func prepareNPM(ctx context.Context, host *hostSide, guest *spriteSide, progress func(string, ...any)) error {
	dir := filepath.Join(host.dir, "npm")
	if err := os.MkdirAll(filepath.Join(dir, "test"), 0o755); err != nil {
		return err
	}
	pkg := fmt.Sprintf(`{"name":"wisp-bench","version":"1.0.0","private":true,
"scripts":{"test":"mocha"},
"dependencies":{"semver":"%s"},"devDependencies":{"mocha":"%s"}}
`, npmSemver, npmMocha)
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(pkg), 0o644); err != nil {
		return err
	}
	for i := range 20 {
		var b strings.Builder
		fmt.Fprintf(&b, "const assert = require('assert');\nconst semver = require('semver');\ndescribe('suite %d', () => {\n", i)
		for j := range 50 {
			fmt.Fprintf(&b, "  it('case %d', () => { assert.ok(semver.satisfies('%d.%d.%d', '>=%d.0.0 <%d.0.0')); assert.strictEqual(semver.inc('%d.%d.0', 'minor'), '%d.%d.0'); });\n",
				j, i, j, 1, i, i+1, i, j, i, j+1)
		}
		b.WriteString("});\n")
		if err := os.WriteFile(filepath.Join(dir, "test", fmt.Sprintf("t%02d.spec.js", i)), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	progress("npm: filling the local cache on the host (mocha %s, semver %s)", npmMocha, npmSemver)
	if _, _, err := host.run(ctx, `cd "$W/npm" && npm install --cache "$W/npmcache" --no-audit --no-fund --loglevel=error >/dev/null && rm -rf node_modules`); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarDirs(pw, host.dir, "npm", "npmcache")) }()
	if err := guest.s.CopyIn(ctx, guest.dir, pr); err != nil {
		return fmt.Errorf("copy the project and cache in: %w", err)
	}
	return nil
}

// tarDirs writes a tar of the named directories of base.
func tarDirs(w io.Writer, base string, names ...string) error {
	tw := tar.NewWriter(w)
	for _, n := range names {
		err := filepath.WalkDir(filepath.Join(base, n), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(base, p)
			var link string
			if info.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(p); err != nil {
					return err
				}
			}
			h, err := tar.FileInfoHeader(info, link)
			if err != nil {
				return err
			}
			h.Name, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(rel), 0, 0, "", ""
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if info.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				_, err = io.Copy(tw, f)
				f.Close()
				return err
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// machine names the host: CPU model and count, memory.
func machine() string {
	model := runtime.GOARCH
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cpus, %s", model, runtime.NumCPU(), runtime.GOOS)
}

func printWorkload(w io.Writer, r WorkloadReport) {
	fmt.Fprintf(w, "\nworkloads: %s (%s), image %s, %d cpu, %d MiB; host: %s; %d runs\n", r.Backend, r.Accel, r.Image, r.CPUs, r.MemoryMiB, r.HostPinned, r.Runs)
	fmt.Fprintf(w, "machine %s; load %s -> %s\n", r.Machine, r.LoadStart, r.LoadEnd)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tHOST COLD\tSPRITE COLD\tRATIO\tHOST WARM\tSPRITE WARM\tRATIO\t")
	for _, m := range r.Metrics {
		warm := "-\t-\t-"
		if m.HostWarm > 0 {
			warm = fmt.Sprintf("%.2fs\t%.2fs\t%.2fx", m.HostWarm, m.SpriteWarm, m.RatioWarm)
		}
		fmt.Fprintf(tw, "%s\t%.2fs\t%.2fs\t%.2fx\t%s\t\n", m.Name, m.HostCold, m.SpriteCold, m.RatioCold, warm)
	}
	tw.Flush()
}

// cpuQuota makes a cgroup whose CPU quota is quota µs per 100 ms (-1:
// none; cgroup v2's cpu.max, or v1's cpu controller), and returns its
// cgroup.procs and the undo that removes it.
func cpuQuota(quota int) (procs string, undo func(), err error) {
	tag := make([]byte, 3)
	rand.Read(tag)
	name := "wisp-bench-" + hex.EncodeToString(tag)
	var dir string
	var files [][2]string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		max := "max"
		if quota > 0 {
			max = fmt.Sprint(quota)
		}
		dir, files = filepath.Join("/sys/fs/cgroup", name), [][2]string{{"cpu.max", max + " 100000"}}
	} else {
		dir, files = filepath.Join("/sys/fs/cgroup/cpu", name), [][2]string{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", fmt.Sprint(quota)}}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", nil, err
	}
	undo = func() { os.Remove(dir) }
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0); err != nil {
			undo()
			return "", nil, err
		}
	}
	return filepath.Join(dir, "cgroup.procs"), undo, nil
}

// vmmQuota reads the CPU quota (µs per 100 ms, -1: none) of the cgroup
// of process pid (the sprite's VMM), if it can.
func vmmQuota(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if pid <= 0 || err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" { // v2
			if v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", f[2], "cpu.max")); err == nil {
				q := strings.Fields(string(v))
				if len(q) == 2 {
					if q[0] == "max" {
						return -1, true
					}
					var quota, period int
					fmt.Sscan(q[0], &quota)
					fmt.Sscan(q[1], &period)
					if period > 0 {
						return quota * 100000 / period, true
					}
				}
			}
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if c != "cpu" {
				continue
			}
			d := filepath.Join("/sys/fs/cgroup/cpu", f[2])
			qb, err1 := os.ReadFile(filepath.Join(d, "cpu.cfs_quota_us"))
			pb, err2 := os.ReadFile(filepath.Join(d, "cpu.cfs_period_us"))
			var quota, period int
			fmt.Sscan(string(qb), &quota)
			fmt.Sscan(string(pb), &period)
			if err1 != nil || err2 != nil || period <= 0 {
				return 0, false
			}
			if quota < 0 {
				return -1, true
			}
			return quota * 100000 / period, true
		}
	}
	return 0, false
}

func quotaText(quota int) string {
	if quota < 0 {
		return "none"
	}
	return fmt.Sprintf("%d%% of a cpu", quota/1000)
}
