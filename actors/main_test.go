package actors

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests: every hub a test
// starts is stopped, and its workers, timers and writers with it. The one
// exception is protoactor's dead-letter throttle, started by a message to
// an actor that has stopped, which lives for its 1 s period whether or not
// the system is shut down (as testutil.LeakOptions says; testutil imports
// this package, so the option is repeated here).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
