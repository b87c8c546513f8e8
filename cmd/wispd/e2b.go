package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/config"
	"github.com/wisp-sh/wisp/internal/e2b"
	"github.com/wisp-sh/wisp/internal/image"
	"github.com/wisp-sh/wisp/internal/meter"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/token"
)

// newE2B builds the E2B-compatible API that the TCP listener serves
// (E2B_API_URL and E2B_SANDBOX_URL of the e2b SDKs), opened by the E2B
// keys of the token store (`wisp token create --e2b`, E2B's X-API-Key).
// getHost(port) names the front door (front): PORT-ID.e2b.localhost.
func newE2B(log *slog.Logger, cfg config.Config, mgr *sprite.Manager, images *image.Store, mtr *meter.Meter, tokens *token.Store, front string) (*e2b.Handler, error) {
	domain := ""
	if _, port, err := net.SplitHostPort(front); err == nil {
		domain = "e2b.localhost:" + port
	}
	return e2b.New(e2b.Options{
		Log: log, Sprites: mgr, DataDir: cfg.DataDir, Domain: domain,
		Images: e2bImages{images: images, mgr: mgr},
		Usage: func(name string) (float64, int64, bool) {
			for _, l := range mtr.Live() {
				if l.Sprite == name {
					return l.CPUPercent, l.MemoryBytes, true
				}
			}
			return 0, 0, false
		},
		Authenticate: func(r *http.Request) error {
			t, ok := tokens.Lookup(r.Header.Get("X-API-Key"))
			if !ok || t.Kind != token.E2B {
				return errors.New("unknown or revoked key: make one with `wisp token create --e2b`")
			}
			return nil
		},
	})
}

// e2bImages keeps E2B templates' images with their user made.
type e2bImages struct {
	images *image.Store
	mgr    *sprite.Manager
}

func (e e2bImages) Built(name string) (time.Time, int64, bool) {
	info, err := e.images.Info(name)
	if err != nil || !info.Built {
		return time.Time{}, 0, false
	}
	return info.BuiltAt, info.SizeBytes, true
}

func (e e2bImages) SaveSprite(ctx context.Context, name, img, from, note string) error {
	recipe := image.Recipe{From: from, Sprite: name, Run: []string{note}}
	_, err := e.images.Save(img, recipe, func(dst string) error {
		_, err := e.mgr.SaveDisk(ctx, name, dst)
		return err
	})
	e.mgr.ForgetImage(img)
	return err
}

func (e e2bImages) Notes(prefix string) (map[string]string, error) {
	list, err := e.images.List()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, info := range list {
		if r := info.Recipe; info.Built && r != nil && len(r.Run) == 1 && strings.HasPrefix(r.Run[0], prefix) {
			out[info.Name] = r.Run[0]
		}
	}
	return out, nil
}

func (e e2bImages) Remove(name string) error {
	err := e.images.Remove(name)
	e.mgr.ForgetImage(name)
	return err
}
