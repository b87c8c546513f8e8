package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http"

	"github.com/wisp-sh/wisp/internal/config"
	"github.com/wisp-sh/wisp/internal/e2b"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/token"
)

// newE2B builds the E2B-compatible API that the TCP listener serves
// (E2B_API_URL and E2B_SANDBOX_URL of the e2b SDKs), opened by the E2B
// keys of the token store (`wisp token create --e2b`, E2B's X-API-Key).
// getHost(port) names the front door (front): PORT-ID.e2b.localhost.
func newE2B(log *slog.Logger, cfg config.Config, mgr *sprite.Manager, tokens *token.Store, front string) (*e2b.Handler, error) {
	domain := ""
	if _, port, err := net.SplitHostPort(front); err == nil {
		domain = "e2b.localhost:" + port
	}
	return e2b.New(e2b.Options{
		Log: log, Sprites: mgr, DataDir: cfg.DataDir, Domain: domain,
		Authenticate: func(r *http.Request) error {
			t, ok := tokens.Lookup(r.Header.Get("X-API-Key"))
			if !ok || t.Kind != token.E2B {
				return errors.New("unknown or revoked key: make one with `wisp token create --e2b`")
			}
			return nil
		},
	})
}
