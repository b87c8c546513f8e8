package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/client"
)

// forward is one [LOCAL:]REMOTE of wisp proxy.
type forward struct{ local, remote int }

func parseForward(s string) (forward, error) {
	l, r, ok := strings.Cut(s, ":")
	if !ok {
		l, r = s, s
	}
	local, lerr := strconv.Atoi(l)
	remote, rerr := strconv.Atoi(r)
	if lerr != nil || rerr != nil || local < 0 || local > 65535 || remote < 1 || remote > 65535 {
		return forward{}, fmt.Errorf("%q: want [LOCAL:]REMOTE ports (LOCAL 0: any free port)", s)
	}
	return forward{local, remote}, nil
}

func newProxy(e *env) *cobra.Command {
	var addr string
	c := &cobra.Command{
		Use:   "proxy NAME [LOCAL:]REMOTE ...",
		Short: "Forward local TCP ports to ports in a sprite (waking it; kept awake while a connection is open)",
		Long: `Listen on local ports and forward each connection to a port in the sprite,
through wispd, until interrupted. A connection wakes a sleeping sprite and
starts a stopped one, and keeps it awake while open. It works whatever the
sprite's egress policy (--deny-all too). LOCAL 0 picks a free port; the
line "forwarding ADDR -> NAME:REMOTE" says which.`,
		Example: "  wisp proxy dev 8080\n  wisp proxy dev 5433:5432 3000",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var fws []forward
			for _, a := range args[1:] {
				f, err := parseForward(a)
				if err != nil {
					return err
				}
				fws = append(fws, f)
			}
			c := e.client()
			ctx := cmd.Context()
			if _, err := c.Sprite(name).Info(ctx); err != nil {
				return err
			}
			var lns []net.Listener
			defer func() {
				for _, ln := range lns {
					ln.Close()
				}
			}()
			for _, f := range fws {
				ln, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(f.local)))
				if err != nil {
					return err
				}
				lns = append(lns, ln)
				fmt.Fprintf(e.stdout, "forwarding %s -> %s:%d\n", ln.Addr(), name, f.remote)
			}
			var wg sync.WaitGroup
			for i, ln := range lns {
				wg.Go(func() { serveForward(ctx, e, c, ln, name, fws[i].remote) })
			}
			<-ctx.Done()
			for _, ln := range lns {
				ln.Close()
			}
			wg.Wait()
			return nil
		},
	}
	c.Flags().StringVar(&addr, "address", "127.0.0.1", "local address to listen on")
	return c
}

// serveForward accepts connections on ln until it is closed and relays
// each to port in the sprite.
func serveForward(ctx context.Context, e *env, c *client.Client, ln net.Listener, name string, port int) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		local, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Go(func() {
			defer local.Close()
			up, err := c.Sprite(name).Connect(ctx, port)
			if err != nil {
				fmt.Fprintf(e.stderr, "wisp proxy: %s:%d: %v\n", name, port, err)
				return
			}
			defer up.Close()
			stop := context.AfterFunc(ctx, func() { // interrupted: end open connections too
				local.Close()
				up.Close()
			})
			defer stop()
			var cw sync.WaitGroup
			cw.Go(func() {
				io.Copy(up, local)
				up.(interface{ CloseWrite() error }).CloseWrite()
			})
			io.Copy(local, up)
			if tc, ok := local.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			cw.Wait()
		})
	}
}
