//go:build !linux

package cli

// unmountUnder does nothing where wispd does not run.
func unmountUnder(string) {}
