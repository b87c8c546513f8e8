package cli

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// Targets of the E2B API (issue 12).
const (
	targetE2BCreateMS = 400 // Sandbox.create() to the first commands.run finished (gVisor, dev)
	targetE2BRunMS    = 15  // commands.run('true')
)

// E2BSDKVersion is the published e2b SDK the bench (and the tests) run.
const E2BSDKVersion = "2.51.0"

//go:embed bench_e2b.mjs
var benchE2BScript []byte

func newBenchE2B(e *env) *cobra.Command {
	var (
		f        benchFlags
		api, key string
		sdk      string
	)
	c := &cobra.Command{
		Use:   "e2b",
		Short: "Measure wispd's E2B API through the published e2b SDK: create to first command, command round trip",
		Long: `Run the published e2b SDK (npm e2b@` + E2BSDKVersion + `, installed with npm into --sdk
the first time) under Node.js against wispd's E2B API (wispd --listen):

  create               Sandbox.create() (the base template: image dev)
  create_to_first_run  Sandbox.create() to its first commands.run('true') finished
                       (target 400 ms on gVisor)
  run_true             commands.run('true'), 10 per sandbox (target 15 ms)
  run_true_settled     the same, 10 more per sandbox from 2.5 s after its
                       create (a gVisor sandbox's clocks are calibrated
                       about a second after it starts; until then every
                       clock read in it is a system call)

One untimed sandbox comes first (the SDK sets itself up at its first calls).
The key is an E2B key: wisp token create --e2b.`,
		Args: cobra.NoArgs,
		RunE: f.each(e, "e2b", func(ctx context.Context, b string) (BenchReport, error) {
			return benchE2B(ctx, e, f, b, api, key, sdk)
		}),
	}
	f.bind(c)
	c.Flags().StringVar(&api, "api", "http://127.0.0.1:7781", "wispd's TCP API (E2B_API_URL and E2B_SANDBOX_URL)")
	c.Flags().StringVar(&key, "key", os.Getenv("E2B_API_KEY"), "E2B key (default $E2B_API_KEY)")
	home, _ := os.UserCacheDir()
	c.Flags().StringVar(&sdk, "sdk", filepath.Join(home, "wisp", "e2b-sdk"), "folder of the e2b npm package (installed there when missing)")
	return c
}

// installE2BSDK installs the pinned e2b package into dir unless it is.
func installE2BSDK(ctx context.Context, e *env, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "e2b", "package.json"))
	if err == nil && bytes.Contains(b, []byte(`"version": "`+E2BSDKVersion+`"`)) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"private": true, "type": "module"}`+"\n"), 0o644)
	}
	fmt.Fprintf(e.stderr, "bench: installing e2b@%s into %s\n", E2BSDKVersion, dir)
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "e2b@"+E2BSDKVersion)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, e.stderr, e.stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm install e2b@%s: %w (the bench needs Node.js and npm)", E2BSDKVersion, err)
	}
	return nil
}

func benchE2B(ctx context.Context, e *env, f benchFlags, backend, api, key, sdk string) (BenchReport, error) {
	rep := BenchReport{Backend: backend, Image: "dev", Runs: f.runs, At: time.Now().UTC()}
	if key == "" {
		return rep, fmt.Errorf("no E2B key: pass --key or set E2B_API_KEY (make one with `wisp token create --e2b`)")
	}
	if err := installE2BSDK(ctx, e, sdk); err != nil {
		return rep, err
	}
	script := filepath.Join(sdk, "wisp-bench-e2b.mjs")
	if err := os.WriteFile(script, benchE2BScript, 0o644); err != nil {
		return rep, err
	}
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = sdk
	cmd.Env = append(os.Environ(), "E2B_API_URL="+api, "E2B_SANDBOX_URL="+api, "E2B_API_KEY="+key,
		"RUNS="+strconv.Itoa(f.runs), "WISP_BACKEND="+backend, "SETTLE_MS="+strconv.Itoa(int(settleAfter.Milliseconds())))
	cmd.Stderr = e.stderr
	out, err := cmd.Output()
	if err != nil {
		return rep, fmt.Errorf("the SDK program failed: %w", err)
	}
	var s struct {
		Create           []float64 `json:"create"`
		CreateToFirstRun []float64 `json:"create_to_first_run"`
		RunTrue          []float64 `json:"run_true"`
		RunTrueSettled   []float64 `json:"run_true_settled"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &s); err != nil {
		return rep, fmt.Errorf("the SDK program's report: %w: %q", err, out)
	}
	createTarget := 0.0
	if backend == "gvisor" {
		createTarget = targetE2BCreateMS
	}
	rep.Metrics = []Metric{
		newMetric("create", "ms", s.Create, 0, "lower"),
		newMetric("create_to_first_run", "ms", s.CreateToFirstRun, createTarget, "lower"),
		newMetric("run_true", "ms", s.RunTrue, targetE2BRunMS, "lower"),
		newMetric("run_true_settled", "ms", s.RunTrueSettled, targetE2BRunMS, "lower"),
	}
	return rep, nil
}
