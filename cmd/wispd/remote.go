package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/wisp-sh/wisp/internal/config"
	"github.com/wisp-sh/wisp/internal/server"
)

// listenRemote opens the API's TCP listener on cfg.Listen (nil: off).
func listenRemote(log *slog.Logger, cfg config.Config) (net.Listener, error) {
	if cfg.Listen == "" {
		log.Info("API over TCP off (--listen is empty)")
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil && cfg.Listen == config.Default().Listen && len(cfg.Etcd) == 0 {
		// Another wispd has the default port: run on without TCP rather
		// than not at all (asked for explicitly, or in a cluster, it is an
		// error).
		log.Warn("API over TCP off: its default address is taken (choose one with --listen)", "addr", cfg.Listen, "err", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("API over TCP: %w (choose another address with --listen, or --listen '' for none)", err)
	}
	return ln, nil
}

// serveRemote serves the API over TCP on ln, behind tokens, until ctx
// ends. It returns the address it listens on ("" off). srv must be
// complete: the handler is built once, here.
func serveRemote(ctx context.Context, log *slog.Logger, ln net.Listener, srv *server.Server) (string, error) {
	if ln == nil {
		return "", nil
	}
	addr := ln.Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() {
		log.Warn("the API listens beyond loopback in plain HTTP: tokens cross the network unencrypted; put TLS in front (a reverse proxy, an SSH or WireGuard tunnel)", "addr", addr.String())
	}
	srv.Listen = addr.String()
	hs := srv.RemoteHTTPServer()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	go func() {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("API over TCP stopped", "err", err)
		}
	}()
	log.Info("API listening over TCP (bearer tokens: wisp token create)", "addr", srv.Listen)
	return srv.Listen, nil
}
