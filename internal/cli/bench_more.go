package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// benchFlags are shared by the bench subcommands.
type benchFlags struct {
	runs    int
	asJSON  bool
	out     string
	img     string
	backend string
}

func (f *benchFlags) bind(c *cobra.Command) {
	c.Flags().IntVar(&f.runs, "runs", 5, "samples per metric")
	c.Flags().BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	c.Flags().StringVar(&f.out, "out", "", "also write the JSON report to this file")
	c.Flags().StringVar(&f.img, "image", "minimal", "image of the benchmark sprites")
	c.Flags().StringVar(&f.backend, "backend", "", "backend to measure: qemu, gvisor or both (default: the daemon's)")
}

// report prints or writes the reports of one bench subcommand.
func (f *benchFlags) report(e *env, reports []BenchReport) error {
	var v any = reports
	if len(reports) == 1 {
		v = reports[0]
	}
	if f.out != "" {
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := os.WriteFile(f.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if f.asJSON {
		return printJSON(e.stdout, v)
	}
	for _, r := range reports {
		printBench(e.stdout, r)
	}
	return nil
}

// each is the RunE of a bench subcommand that measures every backend of
// the flags with one and reports them together.
func (f *benchFlags) each(e *env, what string, one func(ctx context.Context, backend string) (BenchReport, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if f.runs < 1 || f.runs > 100 {
			return fmt.Errorf("--runs %d: want 1-100", f.runs)
		}
		var reports []BenchReport
		for _, b := range f.backends() {
			r, err := one(cmd.Context(), b)
			if err != nil {
				return fmt.Errorf("bench %s %s: %w", what, b, err)
			}
			reports = append(reports, r)
		}
		return f.report(e, reports)
	}
}

func (f *benchFlags) backends() []string {
	if f.backend == "both" {
		return []string{"qemu", "gvisor"}
	}
	return []string{f.backend}
}

func newBenchCheckpoint(e *env) *cobra.Command {
	var f benchFlags
	c := &cobra.Command{
		Use:   "checkpoint",
		Short: "Measure checkpoint, restore and fork on a sprite holding 1 GiB of data",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var reports []BenchReport
			for _, b := range f.backends() {
				r, err := benchCheckpoint(cmd.Context(), e, f, b)
				if err != nil {
					return fmt.Errorf("bench checkpoint %s: %w", b, err)
				}
				reports = append(reports, r)
			}
			return f.report(e, reports)
		},
	}
	f.bind(c)
	return c
}

// poolUsed reads the pool's used bytes from the daemon's doctor report.
func poolUsed(ctx context.Context, c *client.Client) (float64, error) {
	d, err := c.Doctor(ctx)
	if err != nil {
		return 0, err
	}
	if d.Pool == nil {
		return 0, fmt.Errorf("the daemon reports no storage pool")
	}
	return float64(d.Pool.Used), nil
}

func benchCheckpoint(ctx context.Context, e *env, f benchFlags, backend string) (BenchReport, error) {
	c := e.client()
	name := "bench-ck-" + randSuffix()
	rep := BenchReport{Image: f.img, Runs: f.runs, At: time.Now().UTC()}
	progress := func(format string, a ...any) { fmt.Fprintf(e.stderr, "bench: "+format+"\n", a...) }
	sp, err := c.Create(ctx, api.CreateRequest{Name: name, Image: f.img, MemoryMiB: 256, DiskGiB: 4, Backend: backend, IdleSeconds: -1})
	if err != nil {
		return rep, err
	}
	defer c.Sprite(name).Destroy(context.WithoutCancel(ctx))
	rep.Backend, rep.Accel = sp.Backend, sp.Accel
	progress("%s: writing 1 GiB of data", name)
	if _, err := benchExec(ctx, c, name, "sh", "-c", "dd if=/dev/urandom of=/home/sprite/data bs=1M count=1024 status=none && sync"); err != nil {
		return rep, err
	}
	var create, restore, restoreMem, fork, cost []float64
	for i := range f.runs {
		// Pool space of one checkpoint plus 10 MB of further writes.
		before, perr := poolUsed(ctx, c)
		t0 := time.Now()
		ck, err := c.Sprite(name).Checkpoint(ctx, api.CheckpointRequest{Comment: "bench", Memory: false})
		if err != nil {
			return rep, err
		}
		create = append(create, ms(time.Since(t0)))
		if _, err := benchExec(ctx, c, name, "sh", "-c", fmt.Sprintf("dd if=/dev/urandom of=/home/sprite/more%d bs=1M count=10 status=none && sync", i)); err != nil {
			return rep, err
		}
		if after, err := poolUsed(ctx, c); perr == nil && err == nil {
			cost = append(cost, (after-before)/(1<<20))
		}
		t0 = time.Now()
		if _, err := c.Sprite(name).Restore(ctx, ck.ID); err != nil {
			return rep, err
		}
		if _, err := benchExec(ctx, c, name, "true"); err != nil {
			return rep, err
		}
		restore = append(restore, ms(time.Since(t0)))
		fname := fmt.Sprintf("%s-f%d", name, i)
		t0 = time.Now()
		if _, err := c.Sprite(name).Fork(ctx, fname, ck.ID); err != nil {
			return rep, err
		}
		if _, err := benchExec(ctx, c, fname, "true"); err != nil {
			return rep, err
		}
		fork = append(fork, ms(time.Since(t0)))
		c.Sprite(fname).Destroy(ctx)
		c.Sprite(name).DeleteCheckpoint(ctx, ck.ID)
		progress("run %d/%d: checkpoint %.1f ms, restore %.0f ms, fork %.0f ms", i+1, f.runs, create[i], restore[i], fork[i])
	}
	for i := range f.runs {
		ck, err := c.Sprite(name).Checkpoint(ctx, api.CheckpointRequest{Comment: "bench", Memory: true})
		if err != nil {
			progress("memory checkpoints: %v", err)
			break
		}
		t0 := time.Now()
		if _, err := c.Sprite(name).Restore(ctx, ck.ID); err != nil {
			return rep, err
		}
		if _, err := benchExec(ctx, c, name, "true"); err != nil {
			return rep, err
		}
		restoreMem = append(restoreMem, ms(time.Since(t0)))
		c.Sprite(name).DeleteCheckpoint(ctx, ck.ID)
		progress("run %d/%d: restore with memory %.0f ms", i+1, f.runs, restoreMem[i])
	}
	rep.Metrics = []Metric{
		newMetric("checkpoint_create", "ms", create, 50, "lower"),
		newMetric("restore_to_first_exec", "ms", restore, 0, "lower"),
		newMetric("restore_memory_to_first_exec", "ms", restoreMem, 0, "lower"),
		newMetric("fork_to_first_exec", "ms", fork, 0, "lower"),
		newMetric("pool_cost_checkpoint_plus_10MB", "MiB", cost, 20, "lower"),
	}
	return rep, nil
}

func newBenchSleep(e *env) *cobra.Command {
	var f benchFlags
	c := &cobra.Command{
		Use:   "sleep",
		Short: "Measure sleep, wake and the memory a sleeping sprite holds, at 256 MiB and 1 GiB",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var reports []BenchReport
			for _, b := range f.backends() {
				for _, mem := range []int{256, 1024} {
					r, err := benchSleep(cmd.Context(), e, f, b, mem)
					if err != nil {
						return fmt.Errorf("bench sleep %s %d MiB: %w", b, mem, err)
					}
					reports = append(reports, r)
				}
			}
			return f.report(e, reports)
		},
	}
	f.bind(c)
	return c
}

func benchSleep(ctx context.Context, e *env, f benchFlags, backend string, memMiB int) (BenchReport, error) {
	c := e.client()
	name := "bench-sl-" + randSuffix()
	rep := BenchReport{Image: fmt.Sprintf("%s, %d MiB", f.img, memMiB), Runs: f.runs, At: time.Now().UTC()}
	sp, err := c.Create(ctx, api.CreateRequest{Name: name, Image: f.img, MemoryMiB: memMiB, Backend: backend, IdleSeconds: -1})
	if err != nil {
		return rep, err
	}
	defer c.Sprite(name).Destroy(context.WithoutCancel(ctx))
	rep.Backend, rep.Accel = sp.Backend, sp.Accel
	// Some state worth keeping: a process and 64 MiB of touched memory.
	if _, err := benchExec(ctx, c, name, "sh", "-c", "setsid sh -c 'head -c 67108864 /dev/zero | tr \"\\0\" x > /dev/shm/ballast; sleep 100000' </dev/null >/dev/null 2>&1 & sleep 1"); err != nil {
		return rep, err
	}
	var sleep, wake, held []float64
	var restore, handshake, firstExec, kept []float64
	for i := range f.runs {
		sp, _ := c.Sprite(name).Info(ctx)
		t0 := time.Now()
		if _, err := c.Sprite(name).Sleep(ctx); err != nil {
			return rep, err
		}
		sleep = append(sleep, ms(time.Since(t0)))
		// Host memory held: the VMM process must be gone.
		h := 0.0
		if sp.Pid > 0 && syscall.Kill(sp.Pid, 0) == nil {
			if rss, _, err := procMemory(sp.Pid); err == nil {
				h = rss
			}
		}
		held = append(held, h)
		t0 = time.Now()
		if _, err := benchExec(ctx, c, name, "true"); err != nil {
			return rep, err
		}
		wake = append(wake, ms(time.Since(t0)))
		// The daemon's split of the wake; the rest is the first exec
		// (with the HTTP round trip).
		sp, err = c.Sprite(name).Info(ctx)
		if err != nil {
			return rep, err
		}
		split := ""
		if w := sp.LastWake; w != nil && !w.At.Before(t0.Add(-time.Second)) { // an older daemon reports none
			restore, handshake = append(restore, w.RestoreMs), append(handshake, w.HandshakeMs)
			firstExec = append(firstExec, max(wake[i]-w.TotalMs, 0))
			kept = append(kept, map[bool]float64{true: 1}[w.KeptSession])
			split = fmt.Sprintf(" (restore %.1f, agent %.1f, kept session %v)", w.RestoreMs, w.HandshakeMs, w.KeptSession)
		}
		fmt.Fprintf(e.stderr, "bench: %s %d MiB run %d/%d: sleep %.1f ms, wake+exec %.1f ms%s\n", rep.Backend, memMiB, i+1, f.runs, sleep[i], wake[i], split)
	}
	rep.Metrics = []Metric{
		newMetric("sleep", "ms", sleep, 50, "lower"),
		newMetric("wake_to_first_exec", "ms", wake, 100, "lower"),
		newMetric("host_memory_while_asleep", "MiB", held, 0, "lower"),
	}
	if len(restore) > 0 {
		rep.Metrics = append(rep.Metrics,
			newMetric("wake_restore", "ms", restore, 0, "lower"),
			newMetric("wake_handshake", "ms", handshake, 0, "lower"),
			newMetric("wake_first_exec", "ms", firstExec, 0, "lower"),
			newMetric("wake_kept_session", "1=kept", kept, 0, "higher"))
	}
	return rep, nil
}

func randSuffix() string { return fmt.Sprintf("%06x", time.Now().UnixNano()&0xffffff) }
