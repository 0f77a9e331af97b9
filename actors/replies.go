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
// Concurrency: answers arrive on the channels' goroutines, the waiter is
// the publishing goroutine; mu guards the results.
type replies struct {
	mu      sync.Mutex
	results []*publishResult // guarded by mu; nil until answered
	left    int              // guarded by mu: answers still missing
	closed  bool             // guarded by mu: the waiter is gone; drop late answers
	done    chan struct{}    // closed when left reaches 0
}

// SendUserMessage takes a channel's answer; it implements actor.Process.
func (r *replies) SendUserMessage(_ *actor.PID, message any) {
	_, msg, _ := actor.UnwrapEnvelope(message)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dead := msg.(*actor.DeadLetterResponse); dead {
		// The registry is gone (the hub is stopping): no answer will come,
		// so fail what is unanswered now rather than at the timeout.
		if !r.closed && r.left > 0 {
			r.left = 0
			close(r.done)
		}
		return
	}
	res, ok := msg.(*publishResult)
	if !ok {
		return
	}
	if r.closed || r.left == 0 || res.Index < 0 || res.Index >= len(r.results) || r.results[res.Index] != nil {
		return
	}
	r.results[res.Index] = res
	if r.left--; r.left == 0 {
		close(r.done)
	}
}

// SendSystemMessage implements actor.Process; no system message is expected.
func (r *replies) SendSystemMessage(*actor.PID, any) {}

// Stop implements actor.Process.
func (r *replies) Stop(*actor.PID) {}

// publishAll sends every publication to its channel and waits, at most
// timeout, for every answer. A publication left unanswered (its channel
// is stuck, or the hub is stopping) has a nil result.
func publishAll(system *actor.ActorSystem, registry *actor.PID, ps []*publish, timeout time.Duration) []*publishResult {
	if len(ps) == 0 {
		return nil
	}
	r := &replies{results: make([]*publishResult, len(ps)), left: len(ps), done: make(chan struct{})}
	pid, _ := system.ProcessRegistry.Add(r, "replies"+system.ProcessRegistry.NextId())
	defer system.ProcessRegistry.Remove(pid)
	for i, p := range ps {
		p.Index = i
		system.Root.RequestWithCustomSender(registry, p, pid)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.results
}
