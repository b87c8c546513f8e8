//go:build !linux

package vmm

import "errors"

// Inspect reports the confinement of process pid; only Linux has one.
func Inspect(pid int) (Confinement, error) {
	return Confinement{}, errors.New("confinement is only reported on Linux")
}
