package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// replies collects the answers to a set of publishes (a batch, or one) in
// one registered process. A protoactor Future per publish registers a
// process, arms a timer and allocates a condition variable for each
// message: with batch publishes over many channels that was about a tenth
// of the relay's CPU per publish. Each publish carries its index in the set
// and the channel's answer carries it back.
//
// A request of several messages also holds the outboxes its messages went
// to (outbox.pushHeld; the channels hand the holds over with adopt) and
// releases them, writing them, when the last answer comes: a connection
// subscribed to several of the request's channels (a dashboard's gadgets)
// then gets all its messages in one write instead of one per channel, even
// when a write to it was under way or owed as the first message came. The
// outboxes adopted from the channels that answered first wait for the
// slowest, and so does whatever else queues into them meanwhile; so at
// most Config.BatchHold: then the request releases what it adopted, and
// the channels that answer later release their own.
//
// Concurrency: answers arrive on the channels' goroutines, the waiter is
// the publishing goroutine; mu guards the results and the adopted
// outboxes. Whoever takes the last answer (or gives up waiting) flushes,
// outside mu.
type replies struct {
	mu      sync.Mutex
	results []*publishResult // guarded by mu; nil until answered
	left    int              // guarded by mu: answers still missing
	closed  bool             // guarded by mu: the waiter is gone; drop late answers
	done    chan struct{}    // closed when left reaches 0
	adopted []*outbox        // guarded by mu: held outboxes to release at the end
	ended   bool             // guarded by mu: adopted was handed out to release; adopt no more
}

// requestOf returns the request a publish came from, or nil when its
// sender is not a replies process of this node.
func requestOf(ctx actor.Context) *replies {
	p, ok := ctx.ActorSystem().ProcessRegistry.Get(ctx.Sender())
	if !ok {
		return nil
	}
	r, _ := p.(*replies)
	return r
}

// adopt takes the holds on outboxes (see outbox.pushHeld), which it will
// release, and reports whether it did; a request that has ended (or is
// nil) leaves them to the caller.
func (r *replies) adopt(outboxes []*outbox) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return false
	}
	if r.adopted == nil {
		// Room for as many outboxes from every message as from the first:
		// one allocation where appending doubled its way up (a batch of 50
		// to channels of 10 subscribers grew it seven times, a sixth of
		// the relay's garbage per message there), within a bound for a
		// first channel much larger than the rest.
		r.adopted = make([]*outbox, 0, min(len(outboxes)*len(r.results), maxAdoptedGuess))
	}
	r.adopted = append(r.adopted, outboxes...)
	return true
}

// maxAdoptedGuess bounds adopt's first allocation: 32 KiB of pointers.
const maxAdoptedGuess = 4096

// endLocked stops adopting and returns what was adopted, for the caller
// to release and flush (releaseAndFlush) once it has released mu.
func (r *replies) endLocked() []*outbox {
	r.ended = true
	out := r.adopted
	r.adopted = nil
	return out
}

// SendUserMessage takes a channel's answer; it implements actor.Process.
func (r *replies) SendUserMessage(_ *actor.PID, message any) {
	_, msg, _ := actor.UnwrapEnvelope(message)
	r.mu.Lock()
	flush := r.takeLocked(msg)
	r.mu.Unlock()
	if len(flush) > 0 {
		releaseAndFlush(flush)
	}
}

// newReplies returns the collector of n answers.
func newReplies(n int) *replies {
	return &replies{results: make([]*publishResult, n), left: n, done: make(chan struct{})}
}

// takeLocked records an answer and returns the adopted outboxes when it
// was the last.
func (r *replies) takeLocked(msg any) []*outbox {
	if _, dead := msg.(*actor.DeadLetterResponse); dead {
		// The registry is gone (the hub is stopping): no answer will come,
		// so fail what is unanswered now rather than at the timeout.
		if !r.closed && r.left > 0 {
			r.left = 0
			close(r.done)
			return r.endLocked()
		}
		return nil
	}
	res, ok := msg.(*publishResult)
	if !ok {
		return nil
	}
	if r.closed || r.left == 0 || res.Index < 0 || res.Index >= len(r.results) || r.results[res.Index] != nil {
		return nil
	}
	r.results[res.Index] = res
	if r.left--; r.left == 0 {
		close(r.done)
		return r.endLocked()
	}
	return nil
}

// SendSystemMessage implements actor.Process; no system message is expected.
func (r *replies) SendSystemMessage(*actor.PID, any) {}

// Stop implements actor.Process.
func (r *replies) Stop(*actor.PID) {}

// publishAll sends every publication to its channel and waits, at most
// timeout, for every answer. A publication left unanswered (its channel
// is stuck, or the hub is stopping) has a nil result. A request of several
// is a batch (publish.Batch): it writes what it adopted after hold at the
// latest.
func publishAll(system *actor.ActorSystem, registry *actor.PID, ps []publish, timeout, hold time.Duration) []*publishResult {
	if len(ps) == 0 {
		return nil
	}
	r := newReplies(len(ps))
	pid, _ := system.ProcessRegistry.Add(r, "replies"+system.ProcessRegistry.NextId())
	defer system.ProcessRegistry.Remove(pid)
	batch := len(ps) > 1
	for i := range ps {
		ps[i].Index, ps[i].Batch = i, batch
		system.Root.RequestWithCustomSender(registry, &ps[i], pid)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	var held <-chan time.Time
	if batch {
		h := time.NewTimer(hold)
		defer h.Stop()
		held = h.C
	}
	for waiting := true; waiting; {
		select {
		case <-r.done:
			waiting = false
		case <-t.C:
			waiting = false
		case <-held:
			// A channel is slow to answer: write what the others queued.
			held = nil
			r.mu.Lock()
			flush := r.endLocked()
			r.mu.Unlock()
			releaseAndFlush(flush)
		}
	}
	r.mu.Lock()
	r.closed = true
	flush := r.endLocked() // a timeout: some channel never answered
	results := r.results
	r.mu.Unlock()
	releaseAndFlush(flush)
	return results
}

// releaseAndFlush releases the holds on held and flushes the outboxes
// that the last hold left to it.
func releaseAndFlush(held []*outbox) {
	flushOutboxes(releaseAll(held))
}
