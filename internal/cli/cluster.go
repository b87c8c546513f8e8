package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newHosts(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "hosts",
		Short: "List the hosts of the cluster (cluster mode)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			hosts, err := e.client().Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, hosts)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tAPI\tSPRITES\tCPU\tBACKENDS\tSTATE\tUP")
			for _, h := range hosts {
				id := h.ID
				if h.Self {
					id += " *"
				}
				state := "ready"
				if h.Draining {
					state = "draining"
				}
				var be []string
				if h.QEMU != "" {
					be = append(be, "qemu "+strings.TrimPrefix(h.QEMU, "QEMU emulator version ")+"/"+h.Accel)
				}
				if h.Runsc != "" {
					be = append(be, "runsc "+h.Runsc)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", id, h.API, h.Sprites, h.CPUClass, strings.Join(be, ", "), state,
					time.Since(h.Started).Round(time.Second))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func newMove(e *env) *cobra.Command {
	var to string
	var asJSON bool
	c := &cobra.Command{
		Use:   "move NAME --to HOST",
		Short: "Move a sprite to another host of the cluster, with its disk and memory",
		Long: `Move a sprite to another host of the cluster. Its host puts it to sleep, publishes
its disk and memory to the object store and lets it go; HOST takes it and fetches
what it lacks. The next use wakes it there, its processes still running (or, on a
host whose CPU or VMM differs, boots its disk cold, and says so in wisp info).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t0 := time.Now()
			s, err := e.client().Sprite(args[0]).Move(cmd.Context(), to)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, s)
			}
			fmt.Fprintf(e.stdout, "%s moved to %s in %s\n", args[0], s.Host, time.Since(t0).Round(time.Millisecond))
			return nil
		},
	}
	c.Flags().StringVar(&to, "to", "", "the host to move it to (see `wisp hosts`)")
	c.MarkFlagRequired("to")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func newDrain(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "drain HOST",
		Short: "Hand every sprite of a host to the others (cluster mode)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := e.client().Drain(cmd.Context(), args[0])
			if asJSON && err == nil {
				return printJSON(e.stdout, res)
			}
			if len(res.Moved) > 0 {
				fmt.Fprintf(e.stdout, "moved: %s\n", strings.Join(res.Moved, ", "))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s is draining: no sprite at rest is placed on it\n", args[0])
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}
