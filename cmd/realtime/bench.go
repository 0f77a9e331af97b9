package main

import (
	"fmt"
	"os"
)

// bench runs `realtime bench`; it returns the process exit code.
func bench(args []string) int {
	fmt.Fprintln(os.Stderr, "realtime bench: not built yet")
	return 2
}
