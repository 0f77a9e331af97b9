package actors

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWorkersNeverWait: idle workers take the mailboxes, one after the
// other, without a goroutine each; with every worker busy, a mailbox
// scheduled next still runs at once, on a goroutine of its own, and
// Schedule never waits.
func TestWorkersNeverWait(t *testing.T) {
	w := newWorkers()
	defer w.close()
	ran := make(chan struct{})
	quick := func() { ran <- struct{}{} }
	schedule := func(fn func()) {
		t.Helper()
		w.Schedule(fn)
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatal("a scheduled mailbox did not run")
		}
	}
	// Until a worker has parked in its receive, mailboxes get goroutines.
	require.Eventually(t, func() bool {
		before := w.spawned.Load()
		schedule(quick)
		return w.spawned.Load() == before
	}, 10*time.Second, time.Millisecond, "no worker ever took a mailbox")

	before := w.spawned.Load()
	for range 100 {
		schedule(quick)
	}
	assert.Less(t, w.spawned.Load()-before, int64(10), "mailboxes got goroutines of their own while workers were idle")

	// Every worker busy, and then some: all still run.
	n := workersPerCore*cores + 5
	started := make(chan struct{}, n)
	release := make(chan struct{})
	defer close(release)
	for range n {
		w.Schedule(func() {
			started <- struct{}{}
			<-release
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
	assert.GreaterOrEqual(t, w.spawned.Load()-before, int64(5), "the mailboxes past the workers got goroutines")
}
