//go:build race

package edge_test

// raceEnabled tells load tests that the race detector makes every
// delivery several times slower, so that they size themselves to fit.
const raceEnabled = true
