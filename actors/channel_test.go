package actors

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recordingSocket is a Socket that takes every write at once and keeps
// what each one carried.
type recordingSocket struct {
	mu     sync.Mutex
	writes []string
}

func (s *recordingSocket) TryWrite(parts [][]byte) (taken, done bool, err error) {
	return true, true, s.Write(parts)
}
func (s *recordingSocket) Write(parts [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, string(bytes.Join(parts, nil)))
	return nil
}
func (s *recordingSocket) WritePing() error            { return nil }
func (s *recordingSocket) WritePong([]byte) error      { return nil }
func (s *recordingSocket) Close(uint16, time.Duration) {}

// stuckSocket is a client that stopped reading: every write waits until
// release is closed.
type stuckSocket struct{ release chan struct{} }

func (s *stuckSocket) TryWrite([][]byte) (taken, done bool, err error) { return false, false, nil }
func (s *stuckSocket) Write([][]byte) error                            { <-s.release; return nil }
func (s *stuckSocket) WritePing() error                                { <-s.release; return nil }
func (s *stuckSocket) WritePong([]byte) error                          { <-s.release; return nil }
func (s *stuckSocket) Close(uint16, time.Duration)                     {}

// TestFlushSweeps: a fan-out larger than a slice is written one slice per
// flushNow. A message queued between two slices (a publish the mailbox
// served meanwhile) joins the first write of every outbox not yet written,
// and the outboxes written already are kicked again behind them.
func TestFlushSweeps(t *testing.T) {
	h := newBenchHub(t)
	defer func() { _ = h.Stop(t.Context()) }()
	slice := flushSliceLen
	n := slice + 10
	c := &channel{cfg: h.cfg, state: &channelState{}}
	socks := make([]*recordingSocket, n)
	outs := make([]*outbox, n)
	for i := range outs {
		socks[i] = &recordingSocket{}
		outs[i] = newOutbox(h.cfg, socks[i], nil)
		c.queue(outs[i], []byte("one"), 0, true)
	}
	require.Len(t, c.state.dirty, n)

	c.flushSlice()
	require.Len(t, c.state.dirty, 10, "one slice written")
	assert.Same(t, outs[slice], c.state.dirty[0], "the rest keeps its order")

	for _, o := range outs {
		c.queue(o, []byte("two"), 0, true)
	}
	require.Len(t, c.state.dirty, n, "the outboxes written already are kicked again, once")
	assert.Same(t, outs[slice], c.state.dirty[0], "not yet written: first")
	assert.Same(t, outs[0], c.state.dirty[10], "written already: behind them")

	for len(c.state.dirty) > 0 {
		c.flushSlice()
	}
	for i, s := range socks {
		if i < slice {
			assert.Equal(t, []string{"one", "two"}, s.writes, "outbox %d", i)
		} else {
			assert.Equal(t, []string{"one\ntwo"}, s.writes, "outbox %d", i)
		}
	}
}

// TestRepliesFlushAdoptedAtTheEnd: a request of several messages writes
// the outboxes its channels held when its last answer comes, not before,
// and after that leaves new ones to their channel. A dead letter (the hub
// stopping) ends it too.
func TestRepliesFlushAdoptedAtTheEnd(t *testing.T) {
	h := newBenchHub(t)
	defer func() { _ = h.Stop(t.Context()) }()
	// held returns the holds of r on an outbox holding frames, as a batch's
	// channels leave them: one, however many frames.
	held := func(sock *recordingSocket, r *replies, frames ...string) []*outbox {
		o := newOutbox(h.cfg, sock, nil)
		var holds []*outbox
		for _, f := range frames {
			if o.pushHeld([]byte(f), 0, r) {
				holds = append(holds, o)
			}
		}
		require.Len(t, holds, 1, "one hold per request")
		return holds
	}

	var a, b recordingSocket
	r := newReplies(2)
	require.True(t, r.adopt(held(&a, r, "a1", "a2")))
	r.SendUserMessage(nil, &publishResult{Index: 0})
	require.True(t, r.adopt(held(&b, r, "b1")))
	assert.Empty(t, a.writes, "written only once every channel answered")
	r.SendUserMessage(nil, &publishResult{Index: 1})
	assert.Equal(t, []string{"a1\na2"}, a.writes)
	assert.Equal(t, []string{"b1"}, b.writes)
	assert.False(t, r.adopt(held(&b, r, "late")), "an ended request adopts nothing")

	var c recordingSocket
	r = newReplies(3)
	require.True(t, r.adopt(held(&c, r, "c1")))
	r.SendUserMessage(nil, &actor.DeadLetterResponse{})
	assert.Equal(t, []string{"c1"}, c.writes)

	assert.False(t, (*replies)(nil).adopt(nil), "a publish not from a request of this node")
}

// TestOneHoldPerRequest: a request holds an outbox once, however many of
// its channels reach it; another request holds it too, and it is written
// at the last release only, with everything queued meanwhile.
func TestOneHoldPerRequest(t *testing.T) {
	h := newBenchHub(t)
	defer func() { _ = h.Stop(t.Context()) }()
	var sock recordingSocket
	o := newOutbox(h.cfg, &sock, nil)
	r1, r2 := newReplies(1), newReplies(1)
	assert.True(t, o.pushHeld([]byte("1a"), 0, r1))
	assert.False(t, o.pushHeld([]byte("1b"), 0, r1), "r1 holds it already")
	assert.True(t, o.pushHeld([]byte("2a"), 0, r2))
	assert.False(t, o.release(), "r2 still holds it")
	o.flush() // a flush owed by someone else, while held
	assert.Empty(t, sock.writes)
	assert.True(t, o.release(), "the last hold leaves the flush to its releaser")
	o.flush()
	assert.Equal(t, []string{"1a\n1b\n2a"}, sock.writes)

	// Interleaved, r1 holds it twice (r2 took the last hold between), and
	// releases it twice: only the last release of all flushes.
	assert.True(t, o.pushHeld([]byte("1c"), 0, r1))
	assert.True(t, o.pushHeld([]byte("2b"), 0, r2))
	assert.True(t, o.pushHeld([]byte("1d"), 0, r1))
	flush := releaseAll([]*outbox{o, o})
	assert.Empty(t, flush, "r2 still holds it")
	assert.Equal(t, []*outbox{o}, releaseAll([]*outbox{o}))
	o.flush()
	assert.Equal(t, []string{"1a\n1b\n2a", "1c\n2b\n1d"}, sock.writes)
}
