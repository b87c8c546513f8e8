package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/client"
)

func newBenchNet(e *env) *cobra.Command {
	var f benchFlags
	var size int
	c := &cobra.Command{
		Use:   "net",
		Short: "Measure sprite networking: throughput and connects to an outside host, DNS, and what a network adds to a create",
		Long: `Measure sprite networking against the running wispd (run it as root on
the daemon's host). The "outside" is a network namespace this command makes
at 198.51.100.2 and removes after: no traffic leaves the machine.

  net_setup        what networking adds to a create: namespace, veth pair,
                   nftables rules and DNS server of one sprite, measured here
                   on a table of the bench's own (wbench), p50 of --runs x 4
  tcp_throughput   one TCP stream from the outside host into the sprite (MB/s)
  tcp_connect      connect round trip from the sprite to the outside host
  dns_query        a query to the sprite's DNS (a hosts-file name) from the sprite

The in-guest figures need python3 in the image (dev has it); with minimal
only throughput is measured, with busybox nc, process start included.`,
		Args: cobra.NoArgs,
		RunE: f.each(e, "net", func(ctx context.Context, b string) (BenchReport, error) { return benchNet(ctx, e, f, b, size) }),
	}
	f.bind(c)
	c.Flags().IntVar(&size, "size", 512, "MiB per throughput sample")
	return c
}

// Targets on the project's machines (issue 8).
const (
	targetNetGVisorMBs = 125 // 1 Gbit/s
	targetDNSms        = 2
	targetNetSetupMS   = 20
)

// benchRun runs argv in the sprite, its stdout into w (may be nil), and
// fails unless it exits 0.
func benchRun(ctx context.Context, c *client.Client, name string, w io.Writer, argv ...string) error {
	var stderr bytes.Buffer
	cmd := c.Sprite(name).CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", argv[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
