//go:build !linux

package meter

import (
	"errors"
	"time"
)

var errNotLinux = errors.New("metering needs Linux")

// Process is Linux only.
func Process(int, string) (time.Duration, int64, string, error) { return 0, 0, "", errNotLinux }

// Storage is Linux only.
func Storage(roots, exclude []string) (int64, error) { return 0, errNotLinux }
