package cli

import (
	"runtime/debug"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/internal/mcp"
)

func newMCP(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "mcp",
		Short: "Serve wisp's tools to an AI agent: a Model Context Protocol server on stdio",
		Long: `wisp mcp speaks the Model Context Protocol on stdin and stdout, giving an
agent tools to create sprites, run commands and move files in them,
checkpoint, restore and fork them, open their URLs and destroy them. It
reaches wispd as every wisp command does (--socket, or --host and --token).`,
		Example: `  claude mcp add wisp -- wisp mcp
  claude mcp add wisp --env WISP_HOST=http://devbox:7781 --env WISP_TOKEN=wisp_... -- wisp mcp`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return mcp.NewServer(mcp.FromClient(e.client()), buildVersion()).Run(cmd.Context(), &sdk.StdioTransport{})
		},
	}
}

// buildVersion is the module version wisp was built as ("(devel)" from a
// work tree).
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}
