//go:build race

package bench_test

// raceFlags builds the child relay with the race detector when the tests
// run under it, so that `go build` reuses the packages the test build
// already compiled.
var raceFlags = []string{"-race"}
