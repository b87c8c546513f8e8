package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/wisp-sh/wisp/api"
)

func newURL(e *env) *cobra.Command {
	var (
		port            int
		signed          bool
		ttl             time.Duration
		public, private bool
		asJSON          bool
	)
	c := &cobra.Command{
		Use:   "url NAME",
		Short: "Print a sprite's URL (the front door proxies it to its service's port or 8080 in the sprite, waking it)",
		Long: `Print the URL at which wispd's front door serves a port of a sprite
(the --port of its first service that has one, else 8080, unless --port
says otherwise): http://NAME.localhost:7780/, or
http://127.0.0.1:7780/s/NAME/ for clients that do not resolve *.localhost.
A request wakes a sleeping sprite and starts a stopped one.

A URL is private by default: a request without a credential gets 401.
--signed adds a credential for that port of that sprite, valid for --ttl;
a browser that opens it gets a cookie for that sprite's host only. The
credential also works as "Authorization: Bearer CREDENTIAL". --public makes
the URL answer anyone who reaches the front door; --private undoes it.`,
		Example: "  wisp url web --signed --ttl 8h\n  wisp url web --port 3000 --public\n  wisp url web --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if public && private {
				return fmt.Errorf("--public and --private: choose one")
			}
			if ttl < time.Second {
				return fmt.Errorf("--ttl %s: want at least 1s", ttl)
			}
			c := e.client()
			name := args[0]
			if public || private {
				if _, err := c.Sprite(name).Update(cmd.Context(), api.UpdateRequest{URLPublic: &public}); err != nil {
					return err
				}
			}
			u, err := c.Sprite(name).URL(cmd.Context(), api.URLRequest{Port: port, Signed: signed, TTLSeconds: int(ttl / time.Second)})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, u)
			}
			fmt.Fprintln(e.stdout, u.URL)
			switch {
			case public:
				fmt.Fprintf(e.stderr, "%s's URL is now public: anyone who reaches the front door gets in\n", name)
			case private:
				fmt.Fprintf(e.stderr, "%s's URL is now private: requests need a credential (--signed)\n", name)
			case !u.Public && !signed:
				fmt.Fprintf(e.stderr, "note: %s's URL is private and answers 401 without a credential: add --signed (or --public)\n", name)
			}
			return nil
		},
	}
	c.Flags().IntVar(&port, "port", 0, "port in the sprite (default: the port of its first service with --port, else 8080)")
	c.Flags().BoolVar(&signed, "signed", false, "add a signed credential valid for --ttl")
	c.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long a signed URL's credential is valid")
	c.Flags().BoolVar(&public, "public", false, "make the sprite's URL answer anyone (recorded)")
	c.Flags().BoolVar(&private, "private", false, "make the sprite's URL need a credential again (recorded; the default)")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON (url, path_url, port, public, expires_at)")
	return c
}
