//go:build !race

package main

// raceFlags builds the relay under test with the race detector when the
// tests run under it, so that the race detector covers the child too.
var raceFlags []string
