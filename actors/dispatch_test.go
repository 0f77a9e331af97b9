package actors

import (
	"runtime"
	"testing"
	"time"
)

// TestWorkersNeverWait: with every worker busy, a mailbox scheduled next
// still runs at once (on a goroutine of its own), and Schedule returns
// without waiting.
func TestWorkersNeverWait(t *testing.T) {
	w := newWorkers()
	defer w.close()
	n := workersPerCore*runtime.GOMAXPROCS(0) + 5
	started := make(chan struct{}, n)
	release := make(chan struct{})
	defer close(release)
	for range n {
		w.Schedule(func() {
			started <- struct{}{}
			<-release // busy until the test ends
		})
	}
	deadline := time.After(10 * time.Second)
	for i := range n {
		select {
		case <-started:
		case <-deadline:
			t.Fatalf("%d of %d mailboxes ran; the rest wait behind busy ones", i, n)
		}
	}
}
