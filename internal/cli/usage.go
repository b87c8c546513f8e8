package cli

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/client"
)

func newUsage(e *env) *cobra.Command {
	var q client.UsageQuery
	var asJSON bool
	c := &cobra.Command{
		Use:   "usage [NAME]...",
		Short: "What sprites used (CPU, memory, storage, network) and what it cost",
		Long: `What sprites used, as the host measured it, and what it cost at the
daemon's prices (wispd --prices; the defaults are an example modelled on
public per-second pricing, not a quote). A sleeping or stopped sprite
uses storage only. Destroyed sprites keep their figures.`,
		Example: "  wisp usage\n  wisp usage dev --since 7d --by day\n  wisp usage --since all --json",
		RunE: func(cmd *cobra.Command, args []string) error {
			q.Sprites = args
			rep, err := e.client().Usage(cmd.Context(), q)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, rep)
			}
			printUsage(e.stdout, rep)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&q.Since, "since", "24h", "from when: a duration (24h), days (7d), all, or an RFC 3339 time")
	f.StringVar(&q.By, "by", "", "also a series by hour or day")
	f.BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func printUsage(w io.Writer, rep api.UsageReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "SPRITE\tCPU-s\tMEM GiB-s\tSTORAGE GiB-h\tNET IN\tNET OUT\tCOST (%s)\t\n", rep.Currency)
	row := func(name string, u api.Usage) {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.4f\t%s\t%s\t%.4f\t\n", name, u.CPUSeconds, u.MemoryGiBSeconds, u.StorageGiBHours,
			bytesString(u.NetRxBytes), bytesString(u.NetTxBytes), u.Cost)
	}
	for _, u := range rep.Sprites {
		name := u.Sprite
		if u.Destroyed {
			name += " (destroyed)"
		}
		row(name, u)
	}
	row("total", rep.Total)
	tw.Flush()
	if len(rep.Series) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "FROM\tCPU-s\tMEM GiB-s\tSTORAGE GiB-h\tNET IN\tNET OUT\tCOST (%s)\t\n", rep.Currency)
		for _, u := range rep.Series {
			row(u.From.Local().Format("2006-01-02 15:04"), u)
		}
		tw.Flush()
	}
}

func bytesString(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func newTop(e *env) *cobra.Command {
	var asJSON, once bool
	var every time.Duration
	c := &cobra.Command{
		Use:   "top",
		Short: "Live CPU, memory and network of each sprite, refreshing in place",
		Long: `Live CPU (percent of one core), resident memory and traffic of each
sprite, as the meter sampled them last (wispd --meter-interval), refreshing
in place until interrupted. With --json or --once, or when stdout is not a
terminal, it prints once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			tty := false
			if f, ok := e.stdout.(*os.File); ok {
				tty = term.IsTerminal(int(f.Fd()))
			}
			for {
				live, err := e.client().Top(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				if asJSON {
					return printJSON(e.stdout, live)
				}
				if tty && !once {
					fmt.Fprint(e.stdout, "\x1b[H\x1b[2J") // home, clear
				}
				printTop(e.stdout, live)
				if once || !tty {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(every):
				}
			}
		},
	}
	f := c.Flags()
	f.BoolVar(&asJSON, "json", false, "print once, as JSON")
	f.BoolVar(&once, "once", false, "print once")
	f.DurationVar(&every, "every", 2*time.Second, "refresh interval")
	return c
}

func printTop(w io.Writer, live []api.Live) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SPRITE\tSTATE\tCPU%\tMEMORY\tNET IN/s\tNET OUT/s\tSTORAGE\t")
	for _, l := range live {
		state := l.State
		if l.Capped != "" {
			state += " (capped)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%s\t%s\t%s\t\n", l.Sprite, state, l.CPUPercent, bytesString(uint64(l.MemoryBytes)),
			bytesString(uint64(l.NetRxRate)), bytesString(uint64(l.NetTxRate)), bytesString(uint64(l.StorageBytes)))
	}
	tw.Flush()
}
