// Package cli implements the wisp command line, one file per verb. It talks
// to wispd only through package client.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/client"
)

// exitError carries an exit code out of a command without printing.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// env is what every command gets.
type env struct {
	socket string // --socket, else WISP_SOCKET, else client.DefaultSocket
	host   string // --host (a base URL), else WISP_HOST: TCP instead of the socket
	token  string // --token, else WISP_TOKEN
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// client returns a client of the daemon the flags and environment name:
// the host (with its token) if one is given, else the socket.
func (e *env) client() *client.Client {
	opts := []client.Option{client.WithSocket(e.socket), client.WithToken(e.token)}
	if e.host != "" {
		opts = append(opts, client.WithHost(e.host))
	}
	return client.New(opts...)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Main runs the CLI and returns the process exit code.
func Main(args []string) int {
	return run(&env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}, args)
}

func run(e *env, args []string) int {
	root := newRoot(e)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// Errors may carry guest text (a guest's message, a console tail).
	fmt.Fprintln(e.stderr, "wisp:", printable(err.Error()))
	if strings.Contains(err.Error(), " arg(s)") || strings.HasPrefix(err.Error(), "unknown flag") {
		fmt.Fprintf(e.stderr, "usage: %s (see %s --help)\n", cmd.UseLine(), cmd.CommandPath())
	}
	var ce *client.Error
	if errors.As(err, &ce) && ce.Hint != "" {
		fmt.Fprintln(e.stderr, "hint:", printable(ce.Hint))
	}
	return 1
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "wisp",
		Short:         "Persistent, isolated Linux computers (sprites) for coding agents",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&e.socket, "socket", envOr("WISP_SOCKET", client.DefaultSocket), "wispd's API socket (env WISP_SOCKET)")
	pf.StringVar(&e.host, "host", os.Getenv("WISP_HOST"), "wispd's API over TCP, a URL such as http://127.0.0.1:7781 (env WISP_HOST; instead of the socket)")
	pf.StringVar(&e.token, "token", os.Getenv("WISP_TOKEN"), "the bearer token for --host (env WISP_TOKEN)")
	root.AddCommand(
		newCreate(e), newList(e), newInfo(e), newExec(e), newConsole(e), newCp(e), newLogs(e),
		newStart(e), newStop(e), newDestroy(e), newImage(e), newDoctor(e), newBench(e),
		newCheckpoint(e), newRestore(e), newFork(e), newSleep(e), newSet(e), newPolicy(e),
		newURL(e), newProxy(e), newService(e),
		newSecret(e), newToken(e), newMCP(e), newSessions(e), newAttach(e), newUsage(e), newTop(e),
		newHosts(e), newMove(e), newDrain(e),
	)
	return root
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
