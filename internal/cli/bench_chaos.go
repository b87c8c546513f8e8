package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/internal/chaos"
)

// newBenchChaos is `wisp bench chaos`: a private wispd of its own, killed
// with SIGKILL at random moments while its sprites change, round after
// round (see internal/chaos). The daemon the CLI usually talks to is not
// touched.
func newBenchChaos(e *env) *cobra.Command {
	var (
		rounds, sprites int
		backend, wispd  string
		asJSON          bool
		out             string
	)
	c := &cobra.Command{
		Use:   "chaos",
		Short: "Kill -9 a private wispd at random moments while its sprites change, and check nothing is lost or left",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if wispd == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				wispd = filepath.Join(filepath.Dir(self), "wispd")
			}
			var reports []chaos.Report
			for _, b := range strings.Split(backend, ",") {
				d, err := startChaosDaemon(cmd.Context(), wispd, b, e)
				if err != nil {
					return err
				}
				rep, err := chaos.Run(cmd.Context(), d, b, sprites, rounds, func(f string, a ...any) { fmt.Fprintf(e.stderr, f+"\n", a...) })
				d.stop()
				if err != nil {
					return fmt.Errorf("%s: %w (daemon log: %s)", b, err, d.logPath)
				}
				reports = append(reports, rep)
				if !asJSON {
					fmt.Fprintln(e.stdout, rep)
				}
			}
			if out != "" {
				b, _ := json.MarshalIndent(reports, "", "  ")
				if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(e.stdout, reports)
			}
			for _, r := range reports {
				if !r.OK() {
					return fmt.Errorf("%s: %d problems: %v", r.Backend, len(r.Problems), r.Problems)
				}
			}
			return nil
		},
	}
	c.Flags().IntVar(&rounds, "rounds", 20, "rounds (one kill each)")
	c.Flags().IntVar(&sprites, "sprites", 3, "sprites made before the first round")
	c.Flags().StringVar(&backend, "backend", "gvisor", "backends, comma-separated: qemu,gvisor")
	c.Flags().StringVar(&wispd, "wispd", "", "the wispd binary (default: next to wisp)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the reports as JSON")
	c.Flags().StringVar(&out, "out", "", "also write the JSON reports to this file")
	return c
}

// chaosDaemon is a private wispd with a data dir of its own.
type chaosDaemon struct {
	wispd, wisp, dir, sock, logPath, backend, netName string
	cmd                                               *exec.Cmd
	e                                                 *env
}

var _ chaos.Daemon = (*chaosDaemon)(nil)

func startChaosDaemon(ctx context.Context, wispd, backend string, e *env) (*chaosDaemon, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// Short: sockets live below it.
	dir, err := os.MkdirTemp("/var/tmp", "wch")
	if err != nil {
		return nil, err
	}
	d := &chaosDaemon{wispd: wispd, wisp: self, dir: dir, sock: filepath.Join(dir, "wisp.sock"), logPath: filepath.Join(dir, "wispd.log"),
		backend: backend, netName: fmt.Sprintf("wc%02d", os.Getpid()%100), e: e}
	if err := d.start(); err != nil {
		return nil, err
	}
	fmt.Fprintf(e.stderr, "chaos: private wispd in %s (log %s); building the minimal image\n", dir, d.logPath)
	if out, errOut, code := d.Wisp("image", "build", "minimal"); code != 0 {
		d.stop()
		return nil, fmt.Errorf("build the minimal image: %s %s", out, errOut)
	}
	return d, nil
}

func (d *chaosDaemon) start() error {
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	first := 2140000000 + (os.Getpid()%100)*1024
	d.cmd = exec.Command(d.wispd, "--data-dir", filepath.Join(d.dir, "data"), "--socket", d.sock,
		"--backend", d.backend, "--allow-tcg", "--idle", "0s", "--default-image", "minimal", "--default-memory", "256",
		"--default-disk", "2", "--pool-size", "20", "--net-name", d.netName, "--net-cidr", fmt.Sprintf("10.%d.0.0/16", 100+os.Getpid()%30),
		"--http-addr", "127.0.0.1:0", "--dns-upstream", "127.0.0.1:9", "--vmm-uids", fmt.Sprintf("%d-%d", first, first+1023))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		return err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, _, code := d.Wisp("list"); code == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wispd did not answer in 2 minutes (log %s)", d.logPath)
		}
	}
}

func (d *chaosDaemon) Wisp(args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.wisp, args...)
	cmd.Env = append(os.Environ(), "WISP_SOCKET="+d.sock)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		return out.String(), err.Error(), -1
	}
	return out.String(), errb.String(), 0
}

func (d *chaosDaemon) Kill9AndRestart() error {
	d.cmd.Process.Kill() // SIGKILL
	d.cmd.Wait()
	return d.start()
}

func (d *chaosDaemon) Dir() string     { return d.dir }
func (d *chaosDaemon) NetName() string { return d.netName }

// stop ends the daemon gently (its sprites are gone by then) and removes
// its data dir.
func (d *chaosDaemon) stop() {
	d.cmd.Process.Signal(os.Interrupt)
	d.cmd.Wait()
	unmountUnder(d.dir) // the pool is a loop-mounted file below it
	os.RemoveAll(d.dir)
}
