package actors

import "sync/atomic"

// workers runs actors' mailboxes on long-lived goroutines. protoactor's
// default dispatcher starts a goroutine each time a mailbox gets work; the
// goroutine starts with a small stack, and the relay's handlers (a
// publish's history append and socket writes, a connection's setup) grow
// it at once: profiled in a batch publish to dashboards, copying stacks
// was 8% of the relay's CPU. A worker's stack stays grown.
//
// Concurrency: Schedule never blocks. It hands the mailbox to an idle
// worker, or, when every worker is busy, to a new goroutine as protoactor
// would, so a mailbox never waits behind another.
type workers struct {
	work    chan func() // unbuffered: a send succeeds only into an idle worker
	stop    chan struct{}
	spawned atomic.Int64 // mailboxes that found no idle worker
}

// mailboxThroughput is how many messages a mailbox handles before it
// yields its goroutine (runtime.Gosched; it keeps its worker until it is
// empty): protoactor's default.
const mailboxThroughput = 300

// workersPerCore: enough idle workers that a burst of mailboxes (a batch
// to many channels) rarely finds them all busy. With 4 a core, in batches
// of 10 to dashboards at 35,000 pub/s, stack growth in new goroutines was
// still 7% of the relay's CPU; with 32 it was gone from the profile. An
// idle worker costs its stack, a few KiB.
const workersPerCore = 32

func newWorkers() *workers {
	w := &workers{work: make(chan func()), stop: make(chan struct{})}
	for range workersPerCore * cores {
		go w.run()
	}
	return w
}

func (w *workers) run() {
	for {
		select {
		case fn := <-w.work:
			fn()
		case <-w.stop:
			return
		}
	}
}

// Schedule implements actor.Dispatcher.
func (w *workers) Schedule(fn func()) {
	select {
	case w.work <- fn:
	default:
		w.spawned.Add(1)
		go fn()
	}
}

// Throughput implements actor.Dispatcher.
func (w *workers) Throughput() int { return mailboxThroughput }

// close ends the idle workers; busy ones end after their mailbox. Later
// mailboxes get goroutines of their own.
func (w *workers) close() { close(w.stop) }
