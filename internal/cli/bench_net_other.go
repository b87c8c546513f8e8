//go:build !linux

package cli

import (
	"context"
	"errors"
)

// benchNet needs a network namespace on the daemon's host, made here.
func benchNet(context.Context, *env, benchFlags, string, int) (BenchReport, error) {
	return BenchReport{}, errors.New("bench net makes an outside host in a network namespace: run it on the daemon's host (Linux), as root")
}
