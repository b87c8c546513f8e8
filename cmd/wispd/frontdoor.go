package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/wisp-sh/wisp/internal/auth"
	"github.com/wisp-sh/wisp/internal/config"
	"github.com/wisp-sh/wisp/internal/server"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// frontDoor is the URL front door as the API sees it: the address it
// listens on ("" off) and the key of signed URLs.
type frontDoor struct {
	addr string
	key  *auth.Key
}

// serveFrontDoor listens on cfg.HTTPAddr and serves sprites' URLs until
// ctx ends.
func serveFrontDoor(ctx context.Context, log *slog.Logger, cfg config.Config, mgr *sprite.Manager) (frontDoor, error) {
	key, err := auth.LoadKey(filepath.Join(cfg.DataDir, "url.key"))
	if err != nil {
		return frontDoor{}, err
	}
	if cfg.HTTPAddr == "" {
		log.Info("front door off (--http-addr is empty)")
		return frontDoor{key: key}, nil
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil && cfg.HTTPAddr == config.Default().HTTPAddr {
		// Another wispd has the default port: run on without a front door
		// rather than not at all (asked for explicitly, it is an error).
		log.Warn("front door off: its default address is taken (choose one with --http-addr)", "addr", cfg.HTTPAddr, "err", err)
		return frontDoor{key: key}, nil
	}
	if err != nil {
		return frontDoor{}, fmt.Errorf("front door: %w (choose another with --http-addr, or --http-addr '' for none)", err)
	}
	fd := server.NewFrontDoor(log, mgr, key)
	fd.Wait = cfg.URLWait
	hs := fd.HTTPServer()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		fd.Close()
	}()
	go func() {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("front door stopped", "err", err)
		}
	}()
	addr := ln.Addr().String()
	log.Info("front door listening", "addr", addr)
	return frontDoor{addr: addr, key: key}, nil
}
