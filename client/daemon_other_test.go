//go:build !linux

package client_test

import "errors"

func startDaemon(string) (func(), error) {
	return nil, errors.New("wispd runs on Linux")
}
