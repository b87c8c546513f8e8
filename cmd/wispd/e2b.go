package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wisp-sh/wisp/internal/config"
	"github.com/wisp-sh/wisp/internal/e2b"
	"github.com/wisp-sh/wisp/internal/sprite"
	"github.com/wisp-sh/wisp/internal/storage"
)

// serveE2B serves E2B's API on cfg.E2BAddr until ctx ends. Its key is
// DATA/e2b/api-key (made at the first start: e2b_ and 40 hex digits).
func serveE2B(ctx context.Context, log *slog.Logger, cfg config.Config, mgr *sprite.Manager, front string) error {
	key, err := loadE2BKey(filepath.Join(cfg.DataDir, "e2b", "api-key"))
	if err != nil {
		return err
	}
	domain := ""
	if front != "" {
		if _, port, err := net.SplitHostPort(front); err == nil {
			domain = "e2b.localhost:" + port
		}
	}
	h, err := e2b.New(e2b.Options{
		Log: log, Sprites: mgr, DataDir: cfg.DataDir, Domain: domain,
		Authenticate: func(r *http.Request) error {
			if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-API-KEY")), []byte(key)) != 1 {
				return errors.New("unknown key")
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.E2BAddr)
	if err != nil {
		h.Close()
		return fmt.Errorf("e2b: %w", err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		h.Close()
	}()
	go func() {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("e2b API stopped", "err", err)
		}
	}()
	log.Info("e2b API listening", "addr", ln.Addr().String(), "domain", domain)
	return nil
}

func loadE2BKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !os.IsNotExist(err) {
		return "", err
	}
	raw := make([]byte, 20)
	rand.Read(raw)
	key := "e2b_" + hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return key, storage.WriteFileAtomic(path, []byte(key+"\n"), 0o600)
}
