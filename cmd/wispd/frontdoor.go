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
// ctx ends. Request headers are bounded in size and time; bodies and
// responses are not (streams, uploads).
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
	if err != nil {
		return frontDoor{}, fmt.Errorf("front door: %w (choose another with --http-addr, or --http-addr '' for none)", err)
	}
	fd := server.NewFrontDoor(log, mgr, key)
	fd.Wait = cfg.URLWait
	hs := &http.Server{
		Handler:           fd,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
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
