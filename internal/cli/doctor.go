package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

// newDoctor shows the daemon's report of its host. The CLI links nothing
// of the daemon, so where no daemon answers on the local socket it asks
// the wispd binary (beside wisp, or on PATH) for this host's report.
func newDoctor(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Show what wispd's host offers and what wisp will use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := e.client().Doctor(cmd.Context())
			if errors.Is(err, client.ErrDaemon) && e.host == "" {
				local, lerr := localDoctor()
				if lerr != nil {
					return fmt.Errorf("%w (and no report of this host: %v)", err, lerr)
				}
				local.Daemon = err.Error()
				if !asJSON {
					fmt.Fprintln(e.stderr, "wisp:", err)
				}
				rep, err = local, nil
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, rep)
			}
			fmt.Fprint(e.stdout, rep.Text)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

// localDoctor runs `wispd --doctor`.
func localDoctor() (api.DoctorReport, error) {
	var rep api.DoctorReport
	bin, err := exec.LookPath("wispd")
	if self, serr := os.Executable(); serr == nil {
		if p := filepath.Join(filepath.Dir(self), "wispd"); fileExists(p) {
			bin, err = p, nil
		}
	}
	if err != nil {
		return rep, errors.New("wispd is not installed here")
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, "--doctor")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return rep, fmt.Errorf("%s --doctor: %v %s", bin, err, bytes.TrimSpace(errb.Bytes()))
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return rep, fmt.Errorf("%s --doctor: %w", bin, err)
	}
	return rep, nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}
