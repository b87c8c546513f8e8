// Command wisp is the command line client of wispd.
package main

import (
	"os"

	"github.com/wisp-sh/wisp/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
