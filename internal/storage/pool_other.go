//go:build !linux

package storage

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/wisp-sh/wisp/internal/errdefs"
)

func ficlone(dst, src *os.File) error { return unix.EOPNOTSUPP }

func openLoop(ctx context.Context, log *slog.Logger, img, dir string, size int64) error {
	return fmt.Errorf("xfs pool needs Linux: %w", errdefs.ErrUnavailable)
}
