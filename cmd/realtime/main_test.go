package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (the clients of
// TestShutdownUnderLoad, above all).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
