package cli

import (
	"github.com/spf13/cobra"
)

func newBench(e *env) *cobra.Command {
	return &cobra.Command{Use: "bench", Short: "Measure sprite speed (medians, p90s, JSON)"}
}
