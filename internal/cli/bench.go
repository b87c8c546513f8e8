package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// Metric is one measured quantity.
type Metric struct {
	Name    string    `json:"name"`
	Unit    string    `json:"unit"`
	Samples []float64 `json:"samples"`
	P50     float64   `json:"p50"`
	P90     float64   `json:"p90"`
	// Target, when set, is the goal for P50; Better says which way is good.
	Target float64 `json:"target,omitempty"`
	Better string  `json:"better,omitempty"` // "lower" or "higher"
	Met    *bool   `json:"met,omitempty"`
}

// BenchReport is what `wisp bench --json` prints and writes.
type BenchReport struct {
	Backend string    `json:"backend"`
	Accel   string    `json:"accel"`
	Image   string    `json:"image"`
	Runs    int       `json:"runs"`
	At      time.Time `json:"at"`
	Metrics []Metric  `json:"metrics"`
}

func quantile(s []float64, q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	c := append([]float64(nil), s...)
	sort.Float64s(c)
	i := int(q*float64(len(c)-1) + 0.5)
	return c[i]
}

func newMetric(name, unit string, samples []float64, target float64, better string) Metric {
	m := Metric{Name: name, Unit: unit, Samples: samples, P50: quantile(samples, 0.5), P90: quantile(samples, 0.9), Target: target, Better: better}
	if target > 0 {
		met := m.P50 < target
		if better == "higher" {
			met = m.P50 > target
		}
		m.Met = &met
	}
	return m
}

// targets per backend on the project's machines (TCG for QEMU). The exec
// round trip's is issue 15's, 5 ms on both backends: under TCG it is the
// KVM expectation, not met by emulation.
var targets = map[string]map[string]float64{
	"qemu":   {"create_to_first_exec": 800, "exec_round_trip": 5, "stdout_throughput": 50},
	"gvisor": {"create_to_first_exec": 300, "exec_round_trip": 5, "stdout_throughput": 50},
}

func newBench(e *env) *cobra.Command {
	var runs, disk int
	var asJSON bool
	var out, imgs, backend string
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure create, exec and throughput: medians, p90s, targets, JSON",
		Long: `Measure against the running wispd, on real sprites: create to first exec
finished, exec round trip of true (right after the create, and settled: from
2.5 s after it), exec stdout throughput, and the host
memory of one idle sprite (VMM RSS and PSS, which counts its share of guest
memory). Prints medians (p50) and p90s with the targets; --json prints the
report as JSON; --out writes it to a file. --backend both runs QEMU and
gVisor in one run and prints their ratios. By default it measures the dev
image (what a user gets) and minimal beside it; the first create of each
(which may copy the image into the pool, and for QEMU builds the warm
snapshot) is reported apart as first_create_cold.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runs < 1 || runs > 1000 {
				return fmt.Errorf("--runs %d: want 1-1000", runs)
			}
			list := []string{backend}
			if backend == "both" {
				list = []string{"qemu", "gvisor"}
			}
			var images []string
			for _, im := range strings.Split(imgs, ",") {
				if im = strings.TrimSpace(im); im != "" {
					images = append(images, im)
				}
			}
			if len(images) == 0 {
				return fmt.Errorf("--image %q: name at least one image", imgs)
			}
			var reports []BenchReport
			for _, im := range images {
				var pair []BenchReport
				for _, b := range list {
					rep, err := runBench(cmd.Context(), e, b, im, runs, disk)
					if err != nil {
						return fmt.Errorf("bench %s %s: %w", b, im, err)
					}
					reports, pair = append(reports, rep), append(pair, rep)
					if !asJSON {
						printBench(e.stdout, rep)
					}
				}
				if len(pair) == 2 && !asJSON {
					printRatios(e.stdout, pair[0], pair[1])
				}
			}
			var v any = reports[0]
			if len(reports) > 1 {
				v = reports
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
	c.AddCommand(newBenchCheckpoint(e), newBenchSleep(e), newBenchNet(e), newBenchURL(e), newBenchE2B(e), newBenchWorkload(e), newBenchChaos(e), newBenchMove(e))
	f := c.Flags()
	f.IntVar(&runs, "runs", 5, "samples per metric (exec round trips take 10x as many)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&out, "out", "", "also write the JSON report to this file")
	f.StringVar(&imgs, "image", "dev,minimal", "images of the benchmark sprites, comma-separated")
	f.IntVar(&disk, "disk", 0, "disk of the benchmark sprites in GiB (default from wispd)")
	f.StringVar(&backend, "backend", "", "backend to measure: qemu, gvisor or both (default: the daemon's)")
	return c
}

func runBench(ctx context.Context, e *env, backend, img string, runs, disk int) (BenchReport, error) {
	c := e.client()
	tag := make([]byte, 3)
	rand.Read(tag)
	prefix := "bench-" + hex.EncodeToString(tag)
	rep := BenchReport{Backend: backend, Image: img, Runs: runs, At: time.Now().UTC()}
	progress := func(format string, a ...any) { fmt.Fprintf(e.stderr, "bench "+img+": "+format+"\n", a...) }

	// A first, cold create; after it the daemon saves a warm snapshot of
	// this kind (where the backend uses them): wait for it, so that the
	// creates measured are the steady state.
	t0 := time.Now()
	first, err := c.Create(ctx, api.CreateRequest{Name: prefix + "-w", Image: img, MemoryMiB: 256, DiskGiB: disk, Backend: backend})
	if err != nil {
		return rep, err
	}
	if _, err := benchExec(ctx, c, prefix+"-w", "true"); err != nil {
		return rep, err
	}
	cold := []float64{ms(time.Since(t0))}
	c.Sprite(prefix + "-w").Destroy(ctx)
	progress("first (cold) create: %.0f ms; waiting for the warm snapshot", cold[0])
	waitWarm(ctx, c, first.Backend, fmt.Sprintf("%s-%s-%dc-%dm-%dg-", first.Backend, img, first.CPUs, first.MemoryMiB, first.DiskGiB))

	// Create to first exec finished.
	var (
		create    []float64
		createdAt time.Time // of the last sprite, the one measured below
	)
	for i := range runs {
		name := fmt.Sprintf("%s-%d", prefix, i)
		t0 := time.Now()
		createdAt = t0
		sp, err := c.Create(ctx, api.CreateRequest{Name: name, Image: img, MemoryMiB: 256, DiskGiB: disk, Backend: backend})
		if err != nil {
			return rep, err
		}
		if _, err := benchExec(ctx, c, name, "true"); err != nil {
			c.Sprite(name).Destroy(context.WithoutCancel(ctx))
			return rep, err
		}
		create = append(create, ms(time.Since(t0)))
		rep.Backend, rep.Accel = sp.Backend, sp.Accel
		progress("create %d/%d: %.0f ms", i+1, runs, create[len(create)-1])
		if i < runs-1 {
			if err := c.Sprite(name).Destroy(ctx); err != nil {
				return rep, err
			}
		}
	}
	name := fmt.Sprintf("%s-%d", prefix, runs-1)
	defer c.Sprite(name).Destroy(context.WithoutCancel(ctx))
	tg := targets[rep.Backend]

	// Host memory of the sprite, idle after its first exec (before the
	// throughput runs touch more of its RAM).
	sp, err := c.Sprite(name).Info(ctx)
	if err != nil {
		return rep, err
	}
	var rss, pss []float64
	for range runs {
		r, p, err := procMemory(sp.Pid)
		if err != nil {
			return rep, fmt.Errorf("read memory of pid %d (run bench on the daemon's host, as root): %w", sp.Pid, err)
		}
		rss, pss = append(rss, r), append(pss, p)
	}

	// Exec round trip.
	execTrue := func() ([]float64, error) {
		var out []float64
		for range runs * 10 {
			t0 := time.Now()
			if _, err := benchExec(ctx, c, name, "true"); err != nil {
				return nil, err
			}
			out = append(out, ms(time.Since(t0)))
		}
		return out, nil
	}
	rtt, err := execTrue()
	if err != nil {
		return rep, err
	}
	progress("exec round trip p50 %.1f ms", quantile(rtt, 0.5))

	// The same once the sprite has run for settleAfter: a gVisor sandbox
	// reads its clocks with system calls until its kernel has calibrated
	// them, about a second after it starts, and the round trips above
	// mostly fall in that second.
	time.Sleep(time.Until(createdAt.Add(settleAfter)))
	settled, err := execTrue()
	if err != nil {
		return rep, err
	}
	progress("exec round trip, settled, p50 %.1f ms", quantile(settled, 0.5))

	// Stdout throughput.
	const size = 64 << 20
	var tput []float64
	for range runs {
		t0 := time.Now()
		n, err := benchExec(ctx, c, name, "dd", "if=/dev/zero", "bs=1M", "count="+strconv.Itoa(size>>20), "status=none")
		if err != nil {
			return rep, err
		}
		if n != size {
			return rep, fmt.Errorf("throughput: got %d bytes, want %d", n, size)
		}
		tput = append(tput, float64(size)/(1<<20)/time.Since(t0).Seconds())
	}
	progress("stdout throughput p50 %.0f MB/s", quantile(tput, 0.5))

	rep.Metrics = []Metric{
		newMetric("create_to_first_exec", "ms", create, tg["create_to_first_exec"], "lower"),
		newMetric("first_create_cold", "ms", cold, 0, "lower"),
		newMetric("exec_round_trip", "ms", rtt, tg["exec_round_trip"], "lower"),
		newMetric("exec_round_trip_settled", "ms", settled, tg["exec_round_trip"], "lower"),
		newMetric("stdout_throughput", "MB/s", tput, tg["stdout_throughput"], "higher"),
		newMetric("idle_host_rss", "MiB", rss, 0, "lower"),
		newMetric("idle_host_pss", "MiB", pss, 0, "lower"),
	}
	return rep, nil
}

// settleAfter is how long after its create a sprite counts as settled:
// gVisor's kernel calibrates the clocks its vDSO serves from two samples
// a second apart (until then every clock read in the sandbox is a system
// call, ~10 µs here, and the guest agent's Go runtime reads them often).
const settleAfter = 2500 * time.Millisecond

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchExec runs argv with empty stdin and returns the stdout byte count.
func benchExec(ctx context.Context, c *client.Client, name string, argv ...string) (int64, error) {
	cw := &countWriter{}
	var errb bytes.Buffer
	cmd := c.Sprite(name).CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = cw, &errb
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: %w %s", strings.Join(argv, " "), err, strings.TrimSpace(errb.String()))
	}
	return cw.n, nil
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// procMemory returns a process's RSS and PSS in MiB (PSS counts its share
// of the shared guest-memory file).
func procMemory(pid int) (rss, pss float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "Rss:":
			rss = kb / 1024
		case "Pss:":
			pss = kb / 1024
		}
	}
	return rss, pss, nil
}

func printBench(w io.Writer, r BenchReport) {
	fmt.Fprintf(w, "\nbackend %s (%s), image %s, %d runs\n", r.Backend, r.Accel, r.Image, r.Runs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tP50\tP90\tTARGET (p50)\tRATIO\t")
	for _, m := range r.Metrics {
		target, ratio := "-", "-"
		if m.Target > 0 {
			op := "<"
			if m.Better == "higher" {
				op = ">"
			}
			verdict := "met"
			if !*m.Met {
				verdict = "MISSED"
			}
			target = fmt.Sprintf("%s %g %s", op, m.Target, m.Unit)
			ratio = fmt.Sprintf("%.2fx of target, %s", m.P50/m.Target, verdict)
		}
		fmt.Fprintf(tw, "%s\t%.2f %s\t%.2f %s\t%s\t%s\t\n", m.Name, m.P50, m.Unit, m.P90, m.Unit, target, ratio)
	}
	tw.Flush()
}

func printRatios(w io.Writer, a, b BenchReport) {
	fmt.Fprintf(w, "\n%s / %s, image %s (p50)\n", b.Backend, a.Backend, a.Image)
	for i, m := range a.Metrics {
		if i < len(b.Metrics) && m.P50 > 0 {
			fmt.Fprintf(w, "  %-22s %.2fx\n", m.Name, b.Metrics[i].P50/m.P50)
		}
	}
}

// waitWarm waits (at most a minute) until the daemon reports a warm
// snapshot whose key starts with prefix (backend, image, cpus, memory and
// disk: a snapshot of another size would not serve the creates measured);
// backends without them return at once.
func waitWarm(ctx context.Context, c *client.Client, backend, prefix string) {
	if backend == "gvisor" {
		return // gVisor starts faster than it restores: no warm snapshots
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		d, err := c.Doctor(ctx)
		if err != nil {
			return
		}
		for _, w := range d.WarmSnapshots {
			if strings.HasPrefix(w, prefix) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond) // polling the daemon for the snapshot
	}
}
