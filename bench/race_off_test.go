//go:build !race

package bench_test

var raceFlags []string
