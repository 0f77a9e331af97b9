//go:build race

package protocol

// raceEnabled tells allocation tests that the race detector changes what
// the compiler can optimise away (slices.Grow allocates twice under it).
const raceEnabled = true
