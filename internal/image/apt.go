package image

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// aptOnce runs apt-get download and apt-cache, running `apt-get update` at
// most once, and only when a lookup or download fails (lists missing or stale).
type aptOnce struct {
	progress io.Writer
	updated  bool
}

func (a *aptOnce) update(ctx context.Context) bool {
	if a.updated {
		return false
	}
	a.updated = true
	fmt.Fprintln(a.progress, "apt-get update")
	_, err := run(ctx, "", "apt-get", "update")
	return err == nil
}

// resolve returns the first package that pkg depends on whose name starts
// with prefix (the versioned kernel image behind the metapackage).
func (a *aptOnce) resolve(ctx context.Context, pkg, prefix string) (string, error) {
	for {
		out, err := run(ctx, "", "apt-cache", "depends", pkg)
		if err == nil {
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				dep, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: ")
				if ok && strings.HasPrefix(dep, prefix) {
					return dep, nil
				}
			}
			err = fmt.Errorf("apt-cache depends %s: no dependency named %s*", pkg, prefix)
		}
		if !a.update(ctx) {
			return "", err
		}
	}
}

// download fetches pkg's .deb into dir and returns its path.
func (a *aptOnce) download(ctx context.Context, dir, pkg string) (string, error) {
	for {
		_, err := run(ctx, dir, "apt-get", "download", pkg)
		if err == nil {
			m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
			if len(m) == 1 {
				return m[0], nil
			}
			err = fmt.Errorf("apt-get download %s: expected one .deb, found %d", pkg, len(m))
		}
		if !a.update(ctx) {
			return "", err
		}
	}
}
