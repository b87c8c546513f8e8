package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// moveFlags are `wisp bench move`'s flags.
type moveFlags struct {
	benchFlags
	memMiB, workMiB      int
	images               string
	wispd, devclusterBin string
	keep                 bool
}

// newBenchMove is `wisp bench move`: a private cluster of its own (a
// wisp-devcluster and two wispd, hosts a and b, on this machine) in which
// sprites sleep, publish, move and wake. The daemon the CLI usually talks
// to is not touched.
func newBenchMove(e *env) *cobra.Command {
	var f moveFlags
	c := &cobra.Command{
		Use:   "move",
		Short: "Measure publish after sleep, wake on another host and on the same host, in a private two-host cluster",
		Long: `Start a private cluster on this machine (wisp-devcluster: an etcd and an S3
server on loopback; two wispd, hosts a and b) and measure, per run, for an idle
sprite and for a busy one (a process that holds --workload MiB of data, a
quarter random bytes as base64 and the rest text, and another that runs):

  sleep_to_published          wisp sleep on a until a has published it (the
                              recovery point: sleep, copy, upload, etcd)
  publish, publish_uploaded   of that, the upload of what changed since its
                              last generation (wispd's own timing), in MiB
  move                        wisp move a -> b: b claims it and fetches the chunks
  wake_other_host             move + exec true on b (wake there to first exec)
  republish                   after a sleep on b: only what changed on b
  wake_same_host              exec true on b after that sleep (claim of its warm
                              copy + wake), for comparison

Images: --images DIR shares an image directory with both hosts (each copies an
image into its pool once); without it each host builds --image first (dev: minutes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.runs < 1 || f.runs > 100 {
				return fmt.Errorf("--runs %d: want 1-100", f.runs)
			}
			if f.workMiB < 0 || f.workMiB > f.memMiB*3/4 {
				return fmt.Errorf("--workload %d MiB: want 0 to 3/4 of --memory (%d MiB)", f.workMiB, f.memMiB)
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if f.wispd == "" {
				f.wispd = filepath.Join(filepath.Dir(self), "wispd")
			}
			if f.devclusterBin == "" {
				f.devclusterBin = filepath.Join(filepath.Dir(self), "wisp-devcluster")
			}
			var reports []BenchReport
			for _, b := range f.backends() {
				r, err := benchMove(cmd.Context(), e, f, b)
				if err != nil {
					return fmt.Errorf("bench move %s: %w", b, err)
				}
				reports = append(reports, r)
			}
			return f.report(e, reports)
		},
	}
	c.Flags().IntVar(&f.runs, "runs", 3, "samples per metric")
	c.Flags().BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	c.Flags().StringVar(&f.out, "out", "", "also write the JSON report to this file")
	c.Flags().StringVar(&f.img, "image", "dev", "image of the benchmark sprites (minimal: faster)")
	c.Flags().StringVar(&f.backend, "backend", "gvisor", "backend to measure: qemu, gvisor or both")
	c.Flags().IntVar(&f.memMiB, "memory", 1024, "memory of the benchmark sprites (MiB)")
	c.Flags().IntVar(&f.workMiB, "workload", 600, "MiB of RAM the busy sprite's workload fills (text and random bytes)")
	c.Flags().StringVar(&f.images, "images", "", "image directory both hosts use (default: each builds --image)")
	c.Flags().StringVar(&f.wispd, "wispd", "", "the wispd binary (default: next to wisp)")
	c.Flags().StringVar(&f.devclusterBin, "devcluster", "", "the wisp-devcluster binary (default: next to wisp)")
	c.Flags().BoolVar(&f.keep, "keep", false, "keep the private cluster's directory (logs) after the run")
	return c
}

// devclusterReady is what `wisp-devcluster --json` prints first.
type devclusterReady struct {
	Etcd   string            `json:"etcd"`
	S3     string            `json:"s3"`
	Bucket string            `json:"bucket"`
	Env    map[string]string `json:"env"`
	Flags  []string          `json:"flags"`
}

// moveCluster is the private cluster of one benchmark.
type moveCluster struct {
	dir   string
	dc    *exec.Cmd
	ready devclusterReady
	hosts []*moveHost
}

// moveHost is one private wispd of it.
type moveHost struct {
	id, dir, logPath string
	cmd              *exec.Cmd
	exited           chan struct{} // closed when cmd has been waited for
	c                *client.Client
}

func lastLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func startMoveCluster(ctx context.Context, e *env, f moveFlags, backend string) (_ *moveCluster, err error) {
	// Short: sockets live below it.
	dir, err := os.MkdirTemp("/var/tmp", "wm")
	if err != nil {
		return nil, err
	}
	mc := &moveCluster{dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w (logs in %s)", err, dir)
			mc.stop(true)
		}
	}()
	dclog, err := os.Create(filepath.Join(dir, "devcluster.log"))
	if err != nil {
		return nil, err
	}
	defer dclog.Close()
	mc.dc = exec.Command(f.devclusterBin, "--dir", filepath.Join(dir, "devcluster"), "--etcd-addr", "127.0.0.1:0",
		"--etcd-peer-addr", "127.0.0.1:0", "--s3-addr", "127.0.0.1:0", "--json")
	mc.dc.Stderr = dclog
	out, err := mc.dc.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := mc.dc.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadBytes('\n')
	if err != nil {
		b, _ := os.ReadFile(dclog.Name())
		return nil, fmt.Errorf("wisp-devcluster did not start: %v: %s", err, b)
	}
	if mc.ready, err = parseDevclusterReady(line); err != nil {
		return nil, err
	}
	fmt.Fprintf(e.stderr, "bench move: private cluster in %s: etcd %s, S3 %s\n", dir, mc.ready.Etcd, mc.ready.S3)

	// Both hosts share an address range (a sprite's address moves with
	// it) and have networks, uids and data of their own.
	tag := os.Getpid() % 100
	cidr := fmt.Sprintf("10.%d.0.0/16", 130+os.Getpid()%30)
	for i, id := range []string{"a", "b"} {
		h := &moveHost{id: id, dir: filepath.Join(dir, id), logPath: filepath.Join(dir, id+".log")}
		mc.hosts = append(mc.hosts, h)
		first := 2143000000 + (tag*2+i)*1024 // apart from bench chaos and the integration tests
		args := append([]string{"--data-dir", filepath.Join(h.dir, "d"), "--socket", filepath.Join(h.dir, "wisp.sock"),
			"--backend", backend, "--allow-tcg", "--idle", "0s", "--default-image", f.img,
			"--pool-size", "20", "--net-name", fmt.Sprintf("wm%02d%s", tag, id), "--net-cidr", cidr,
			"--http-addr", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--dns-upstream", "127.0.0.1:9",
			"--vmm-uids", fmt.Sprintf("%d-%d", first, first+1023), "--host-id", id}, mc.ready.Flags...)
		if f.images != "" {
			args = append(args, "--images", f.images)
		}
		if err := h.start(ctx, f.wispd, args, mc.ready.Env); err != nil {
			return nil, err
		}
	}
	for _, h := range mc.hosts {
		if _, err := h.c.Image(ctx, f.img); err == nil {
			continue
		}
		fmt.Fprintf(e.stderr, "bench move: host %s builds the %s image\n", h.id, f.img)
		if _, err := h.c.BuildImage(ctx, f.img, nil); err != nil {
			return nil, fmt.Errorf("host %s: build the %s image: %w", h.id, f.img, err)
		}
	}
	return mc, nil
}

func (h *moveHost) start(ctx context.Context, wispd string, args []string, env map[string]string) error {
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return err
	}
	logf, err := os.Create(h.logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	h.cmd = exec.Command(wispd, args...)
	h.cmd.Env = os.Environ()
	for k, v := range env {
		h.cmd.Env = append(h.cmd.Env, k+"="+v)
	}
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	if err := h.cmd.Start(); err != nil {
		return err
	}
	h.exited = make(chan struct{})
	go func() { h.cmd.Wait(); close(h.exited) }()
	h.c = client.New(client.WithSocket(filepath.Join(h.dir, "wisp.sock")))
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, err := h.c.List(ctx); err == nil {
			return nil
		}
		select {
		case <-h.exited:
			return fmt.Errorf("host %s: wispd exited: %s", h.id, lastLine(h.logPath))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("host %s: wispd did not answer in 2 minutes (log %s)", h.id, h.logPath)
		}
	}
}

// stop ends the hosts (after their sprites), then the devcluster, and
// removes the directory unless keep.
func (mc *moveCluster) stop(keep bool) {
	for _, h := range mc.hosts {
		if h.cmd == nil || h.cmd.Process == nil {
			continue
		}
		if list, err := h.c.List(context.Background()); err == nil {
			for _, s := range list {
				if s.Host == "" || s.Host == h.id {
					h.c.Sprite(s.Name).Destroy(context.Background())
				}
			}
		}
		h.cmd.Process.Signal(os.Interrupt)
		<-h.exited
	}
	if mc.dc != nil && mc.dc.Process != nil {
		mc.dc.Process.Signal(os.Interrupt)
		mc.dc.Wait()
	}
	unmountUnder(mc.dir)
	if !keep {
		os.RemoveAll(mc.dir)
	}
}

func parseDevclusterReady(line []byte) (devclusterReady, error) {
	var r devclusterReady
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("wisp-devcluster said %q: %w", bytes.TrimSpace(line), err)
	}
	if r.Etcd == "" || r.S3 == "" || len(r.Flags) == 0 {
		return r, fmt.Errorf("wisp-devcluster said %q: no etcd, S3 or flags", bytes.TrimSpace(line))
	}
	return r, nil
}

// published is what a host logged when it published a generation.
type published struct {
	took  time.Duration
	bytes int64
}

// logFields splits a log/slog text line into its key=value fields
// (quoted values unquoted).
func logFields(line string) map[string]string {
	m := map[string]string{}
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimLeft(s, " ") {
		k, rest, ok := strings.Cut(s, "=")
		if !ok || strings.ContainsAny(k, " \"") {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		m[k] = v
		s = rest
	}
	return m
}

// findPublished looks in a wispd log for the publish of sprite's
// generation gen; failed is set when the host logged a failed publish of
// the sprite instead.
func findPublished(log []byte, sprite string, gen uint64) (p published, found bool, failed string) {
	for _, line := range strings.Split(string(log), "\n") {
		f := logFields(line)
		if f["sprite"] != sprite {
			continue
		}
		switch f["msg"] {
		case "sprite published":
			if f["generation"] != strconv.FormatUint(gen, 10) {
				continue
			}
			took, err1 := time.ParseDuration(f["took"])
			n, err2 := strconv.ParseInt(f["bytes_uploaded"], 10, 64)
			if err1 != nil || err2 != nil {
				return p, false, "unreadable log line: " + line
			}
			return published{took: took, bytes: n}, true, ""
		case "publish":
			failed = f["err"]
		}
	}
	return p, false, failed
}

// waitPublished waits until host h has published sprite's generation gen
// and let it go (at rest, on no host: a move now finds it published). The
// benchmark has one sprite at a time: h owns none then. (Not Info: asked
// of a sprite at rest, a host takes it back.)
func (h *moveHost) waitPublished(ctx context.Context, sprite string, gen uint64) (published, error) {
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(h.logPath)
		if err != nil {
			return published{}, err
		}
		p, ok, failed := findPublished(b, sprite, gen)
		if ok {
			if hosts, err := h.c.Hosts(ctx); err == nil && slices.ContainsFunc(hosts, func(x api.Host) bool { return x.ID == h.id && x.Sprites == 0 }) {
				return p, nil
			}
		}
		if failed != "" {
			return p, fmt.Errorf("host %s: publish of %s failed: %s", h.id, sprite, failed)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return p, fmt.Errorf("host %s: %s generation %d not published in 10 minutes (log %s)", h.id, sprite, gen, h.logPath)
		}
	}
}

// moveSamples are one kind of sprite's samples over the runs.
type moveSamples struct {
	toPublished, publish, uploaded, move, wakeOther, republish, reuploaded, wakeSame []float64
}

func benchMove(ctx context.Context, e *env, f moveFlags, backend string) (rep BenchReport, err error) {
	mc, err := startMoveCluster(ctx, e, f, backend)
	if err != nil {
		return rep, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w (logs in %s)", err, mc.dir)
			f.keep = true
		}
		mc.stop(f.keep)
	}()
	a, b := mc.hosts[0], mc.hosts[1]
	rep = BenchReport{Backend: backend, Image: fmt.Sprintf("%s, %d MiB, workload %d MiB", f.img, f.memMiB, f.workMiB), Runs: f.runs, At: time.Now().UTC()}
	kinds := []string{"idle", "busy"}
	samples := map[string]*moveSamples{"idle": {}, "busy": {}}
	for i := range f.runs {
		for _, kind := range kinds {
			s := samples[kind]
			name := fmt.Sprintf("bm-%s-%d-%s", kind, i, randSuffix())
			sp, err := a.c.Create(ctx, api.CreateRequest{Name: name, Image: f.img, MemoryMiB: f.memMiB, Backend: backend, IdleSeconds: -1})
			if err != nil {
				return rep, fmt.Errorf("create on a: %w", err)
			}
			rep.Accel = sp.Accel
			if _, err := benchExec(ctx, a.c, name, "true"); err != nil {
				return rep, err
			}
			if kind == "busy" && f.workMiB > 0 {
				rss, took, err := fillMemory(ctx, a.c, name, f.workMiB)
				if err != nil {
					return rep, fmt.Errorf("workload: %w", err)
				}
				fmt.Fprintf(e.stderr, "bench move: %s: its workload holds %d MiB (filled in %s)\n", name, rss, took.Round(time.Millisecond))
			}

			// Sleep on a; a publishes generation 1.
			t0 := time.Now()
			if _, err := a.c.Sprite(name).Sleep(ctx); err != nil {
				return rep, fmt.Errorf("sleep on a: %w", err)
			}
			p, err := a.waitPublished(ctx, name, 1)
			if err != nil {
				return rep, err
			}
			s.toPublished = append(s.toPublished, ms(time.Since(t0)))
			s.publish, s.uploaded = append(s.publish, ms(p.took)), append(s.uploaded, mib(p.bytes))

			// Move to b, then the first exec there.
			t0 = time.Now()
			if _, err := a.c.Sprite(name).Move(ctx, "b"); err != nil {
				return rep, fmt.Errorf("move a -> b: %w", err)
			}
			moved := time.Since(t0)
			if _, err := benchExec(ctx, b.c, name, "true"); err != nil {
				return rep, fmt.Errorf("exec on b: %w", err)
			}
			s.move, s.wakeOther = append(s.move, ms(moved)), append(s.wakeOther, ms(time.Since(t0)))
			if kind == "busy" && f.workMiB > 0 {
				// The memory came along: the files in tmpfs are whole.
				// The memory came along: the process holding it runs on.
				if _, err := benchExec(ctx, b.c, name, "sh", "-c", "test -e /tmp/filled && kill -0 $(cat /tmp/holder.pid)"); err != nil {
					return rep, fmt.Errorf("the workload on b: %w", err)
				}
			}

			// Sleep on b (generation 2: what changed on b), wake on b.
			if _, err := b.c.Sprite(name).Sleep(ctx); err != nil {
				return rep, fmt.Errorf("sleep on b: %w", err)
			}
			p, err = b.waitPublished(ctx, name, 2)
			if err != nil {
				return rep, err
			}
			s.republish, s.reuploaded = append(s.republish, ms(p.took)), append(s.reuploaded, mib(p.bytes))
			t0 = time.Now()
			if _, err := benchExec(ctx, b.c, name, "true"); err != nil {
				return rep, fmt.Errorf("exec on b after a sleep there: %w", err)
			}
			s.wakeSame = append(s.wakeSame, ms(time.Since(t0)))
			fmt.Fprintf(e.stderr, "bench move: %s run %d/%d: publish %.0f ms (%.1f MiB), move %.0f ms, wake on b %.0f ms, republish %.0f ms (%.1f MiB), wake same host %.0f ms\n",
				kind, i+1, f.runs, s.publish[i], s.uploaded[i], s.move[i], s.wakeOther[i], s.republish[i], s.reuploaded[i], s.wakeSame[i])
			if err := b.c.Sprite(name).Destroy(ctx); err != nil {
				return rep, fmt.Errorf("destroy: %w", err)
			}
		}
	}
	for _, kind := range kinds {
		s := samples[kind]
		rep.Metrics = append(rep.Metrics,
			newMetric(kind+"_sleep_to_published", "ms", s.toPublished, 0, "lower"),
			newMetric(kind+"_publish", "ms", s.publish, 0, "lower"),
			newMetric(kind+"_publish_uploaded", "MiB", s.uploaded, 0, "lower"),
			newMetric(kind+"_move", "ms", s.move, 0, "lower"),
			newMetric(kind+"_wake_other_host", "ms", s.wakeOther, 0, "lower"),
			newMetric(kind+"_republish", "ms", s.republish, 0, "lower"),
			newMetric(kind+"_republish_uploaded", "MiB", s.reuploaded, 0, "lower"),
			newMetric(kind+"_wake_same_host", "ms", s.wakeSame, 0, "lower"),
		)
	}
	return rep, nil
}

// fillMemory starts the busy sprite's workload: a process (awk) that
// reads and holds mib MiB of data, a quarter of it random bytes (as
// base64) and the rest numbers as text, so that it compresses about as
// real memory does. It returns once the data is in, with the process's
// resident MiB.
func fillMemory(ctx context.Context, c *client.Client, name string, mib int) (rss int, took time.Duration, err error) {
	rnd := mib / 4
	txt := mib - rnd*4/3
	script := fmt.Sprintf(`rm -f /tmp/filled; setsid sh -c '{ head -c %d /dev/urandom | base64; seq 1 999999999 | head -c %d; touch /tmp/filled; exec sleep 1000000; } | tr -d "\n" | fold -w 8192 | awk "{ a[NR] = \$0 }" & echo $! > /tmp/holder.pid; wait' </dev/null >/dev/null 2>&1 &`, rnd<<20, txt<<20)
	t0 := time.Now()
	if _, err := benchExec(ctx, c, name, "sh", "-c", script); err != nil {
		return 0, 0, err
	}
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		var out bytes.Buffer
		cmd := c.Sprite(name).CommandContext(ctx, "sh", "-c", "test -e /tmp/filled && awk '/^VmRSS:/ { print $2 }' /proc/$(cat /tmp/holder.pid)/status")
		cmd.Stdout = &out
		if cmd.Run() == nil {
			if kb, err := strconv.Atoi(strings.TrimSpace(out.String())); err == nil && kb>>10 >= mib*85/100 {
				return kb >> 10, time.Since(t0), nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, 0, fmt.Errorf("the workload did not fill %d MiB in 5 minutes (resident: %q KiB)", mib, strings.TrimSpace(out.String()))
		}
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
