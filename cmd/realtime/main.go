// Command realtime is the relay's one binary: `realtime serve` runs the
// relay, `realtime token` mints tokens for development and operations, and
// `realtime bench` load-tests a relay. This package only wires: flags and
// environment into configs, start, wait for a signal, stop in order.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `usage: realtime <command> [flags]

commands:
  serve   run the relay (realtime serve --help for flags; --dev needs none)
  token   mint a subscribe or publish token
  bench   load-test a relay (starts one itself unless --url is given)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "token":
		err = token(os.Args[2:], os.Stdout)
	case "bench":
		os.Exit(bench(os.Args[2:]))
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "realtime: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // the flag set printed the help: asking for it is not a failure
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "realtime:", err)
		os.Exit(1)
	}
}
