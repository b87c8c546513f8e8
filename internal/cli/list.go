package cli

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

func newList(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sprites",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := e.client().List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, list)
			}
			clustered := slices.ContainsFunc(list, func(s api.Sprite) bool { return s.Host != "" || s.Generation > 0 })
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			head := "NAME\tSTATE\tBACKEND\tCPUS\tMEMORY\tDISK\tIMAGE\tCREATED"
			if clustered {
				head += "\tHOST"
			}
			fmt.Fprintln(tw, head)
			for _, s := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%d\t%d MiB\t%d GiB\t%s\t%s", s.Name, s.State, s.Backend, s.Accel,
					s.CPUs, s.MemoryMiB, s.DiskGiB, s.Image, s.CreatedAt.Local().Format(time.DateTime))
				if clustered {
					fmt.Fprintf(tw, "\t%s", cmp.Or(s.Host, "-"))
				}
				fmt.Fprintln(tw)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func newInfo(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "info NAME",
		Short: "Show one sprite",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := e.client().Sprite(args[0]).Info(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, s)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
			row("name", s.Name)
			row("state", s.State)
			row("backend", s.Backend)
			row("accel", s.Accel)
			row("cpus", s.CPUs)
			row("memory", fmt.Sprintf("%d MiB", s.MemoryMiB))
			row("disk", fmt.Sprintf("%d GiB (%.1f MiB used on the host)", s.DiskGiB, float64(s.DiskUsedBytes)/(1<<20)))
			row("pids", fmt.Sprintf("%d (process limit)", cmp.Or(s.Pids, 1024)))
			row("image", s.Image)
			row("origin", s.Origin)
			row("idle", idleString(s.IdleSeconds))
			for _, kv := range s.Env {
				row("env", kv)
			}
			if s.Address != "" {
				gw := "?"
				if a, err := netip.ParseAddr(s.Address); err == nil {
					gw = a.Prev().String()
				}
				row("address", fmt.Sprintf("%s (gateway and DNS %s)", s.Address, gw))
				row("egress", s.Policy.String())
				row("traffic", fmt.Sprintf("%.1f MiB in, %.1f MiB out", float64(s.NetRxBytes)/(1<<20), float64(s.NetTxBytes)/(1<<20)))
			} else {
				row("network", "none")
			}
			if s.URLPublic {
				row("url", "public (anyone who reaches the front door; `wisp url "+s.Name+"`)")
			} else {
				row("url", "private (needs a credential: `wisp url "+s.Name+" --signed`)")
			}
			if len(s.Checkpoints) > 0 {
				row("checkpoints", len(s.Checkpoints))
			}
			row("created", s.CreatedAt.Local().Format(time.RFC3339))
			if s.Pid > 0 {
				row("pid", s.Pid)
			}
			if s.Confinement != nil {
				row("jail", s.Confinement.Text)
			}
			if s.State == "sleeping" {
				durable := "on stable storage"
				if !s.SleepSynced {
					durable = "still being written to stable storage"
				}
				row("asleep since", s.SleptAt.Local().Format(time.RFC3339)+" (state "+durable+")")
			}
			if w := s.LastWake; w != nil {
				session := "new agent session"
				if w.KeptSession {
					session = "agent session kept"
				}
				row("last wake", fmt.Sprintf("%s: %.0f ms (restore %.0f ms, agent %.0f ms, %s)",
					w.At.Local().Format(time.RFC3339), w.TotalMs, w.RestoreMs, w.HandshakeMs, session))
			}
			if p := s.Pending; p != nil {
				row("pending size", fmt.Sprintf("%d CPUs, %d MiB, %d GiB at the next cold boot (wisp stop, wisp start)", p.CPUs, p.MemoryMiB, p.DiskGiB))
			}
			if s.Host != "" || s.Generation > 0 {
				host := s.Host
				if host == "" {
					host = "none (at rest: the next use wakes it on a host)"
				}
				row("host", host)
				row("generation", fmt.Sprintf("%d (last published state)", s.Generation))
			}
			if s.Capped != "" {
				row("capped", s.Capped+" (asleep until the cap is raised or the period rolls over)")
			}
			if s.LastError != "" {
				row("last error", printable(s.LastError))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}
