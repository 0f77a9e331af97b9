package actors

import (
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/realtime-relay/realtime/internal/protocol"
)

// channelState is what a channel keeps across a restart of its actor.
// protoactor calls the producer again on restart, which loses the actor's
// fields; this struct is captured by the producer closure instead, so the
// subscribers survive a crash and can be told to refetch.
type channelState struct {
	name string
	// subs lists the subscribers for fan-out; index maps a PID's Id to its
	// position in subs (swap-remove keeps removal O(1)).
	subs  []subscriber
	index map[string]int
	// dirty lists the outboxes this channel kicked and must flush (see
	// outbox), from dirty[flushed:]; flushPending says a flushNow is in
	// the mailbox. They live here so that a restart still flushes what was
	// kicked.
	dirty        []*outbox
	flushed      int
	flushPending bool
	// held lists the outboxes a batch's publish holds (see
	// outbox.pushHeld) until its request adopts them; it lives here so
	// that a restart releases the holds of a publish that crashed.
	held []*outbox
	// received counts the routed messages handled, for passivation.
	received uint64
	// incarnations counts Started messages: above 1 means a restart.
	incarnations int
	// inflight is the sender of the publish being handled, so that the
	// publisher gets an answer even when handling it crashes the actor.
	inflight      *actor.PID
	inflightIndex int
	// idleTimer is the pending idle check, nil when none. It lives here so
	// that a restart does not start a second chain of checks.
	idleTimer *time.Timer
}

// subscriber is a connection subscribed to the channel, and its outbox.
type subscriber struct {
	pid *actor.PID
	out *outbox
}

// channel is the actor that owns one channel: its subscribers and History.
// Only its own mailbox touches it, so nothing here needs a lock.
type channel struct {
	cfg     *Config
	state   *channelState
	history History
	log     *slog.Logger
}

func channelProps(cfg *Config, name string) *actor.Props {
	st := &channelState{name: name, index: make(map[string]int)}
	return actor.PropsFromProducer(func() actor.Actor {
		return &channel{cfg: cfg, state: st}
	}, actor.WithDispatcher(cfg.workers))
}

func (c *channel) Receive(ctx actor.Context) {
	if _, routed := ctx.Message().(channelMessage); routed {
		c.state.received++
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.started(ctx)
	case *publish:
		c.publish(ctx, m)
	case *subscribe:
		c.subscribe(ctx, m)
	case *unsubscribe:
		c.unsubscribe(ctx, m)
		c.armIdleCheck(ctx)
	case *flushNow:
		c.state.flushPending = false
		c.flushSlice()
		c.scheduleFlush(ctx) // the rest, after the publishes meanwhile
	case *idleTick:
		c.state.idleTimer = nil
		c.checkIdle(ctx)
	case *crashForTest:
		panic("crashForTest")
	case *actor.Stopped:
		c.releaseHeld()
		flushOutboxes(c.state.dirty[c.state.flushed:])
		c.state.resetDirty()
		if t := c.state.idleTimer; t != nil {
			t.Stop()
		}
		c.cfg.Metrics.ChannelsLive.Dec()
		c.cfg.Metrics.SubscriptionsOpen.Add(-float64(len(c.state.subs)))
	}
}

// started runs on the first start and after every restart. A restart means
// the stream lost its continuity: a new History (new epoch), a reset to every
// subscriber, and an answer to the publisher whose message crashed us.
func (c *channel) started(ctx actor.Context) {
	st := c.state
	st.incarnations++
	c.log = c.cfg.Logger.With("channel", st.name)
	c.history = c.cfg.NewHistory(st.name)
	if st.incarnations == 1 {
		c.cfg.Metrics.ChannelsLive.Inc()
		c.armIdleCheck(ctx)
		return
	}
	c.cfg.Metrics.ChannelRestarts.Inc()
	if st.inflight != nil {
		ctx.Send(st.inflight, &publishResult{Index: st.inflightIndex, Err: errUnavailable})
		st.inflight = nil
	}
	// A flushNow that was in flight may have been the message that crashed.
	st.flushPending = false
	c.releaseHeld() // a batch's publish may have crashed
	frame := protocol.AppendReset(nil, st.name, c.history.Epoch(), c.history.Latest())
	for _, s := range st.subs {
		c.queue(s.out, frame, 0, false)
	}
	c.scheduleFlush(ctx)
	c.armIdleCheck(ctx)
}

func (c *channel) publish(ctx actor.Context, m *publish) {
	st := c.state
	st.inflight, st.inflightIndex = ctx.Sender(), m.Index
	offset, frame, dup, err := c.history.Append(c.cfg.Now(), m.IdempotencyKey, func(dst []byte, offset uint64) []byte {
		return protocol.AppendMsg(dst, m.Channel, m.Event, m.Data, offset)
	})
	if err != nil {
		c.log.Error("history append failed", "err", err)
		ctx.Respond(&publishResult{Index: m.Index, Err: errUnavailable})
		st.inflight = nil
		return
	}
	if !dup {
		// A batch's request holds the outboxes of the batch's messages,
		// to write them with its other channels' messages in one write
		// (see outbox.pushHeld); whoever else is writing them, or owes
		// them a flush, leaves them to it. Not a fan-out larger than a
		// slice: that one is written in slices.
		var r *replies
		if m.Batch && len(st.subs) <= flushSliceLen {
			r = requestOf(ctx)
		}
		hook := c.cfg.BeforeDeliverForTest
		for i, s := range st.subs {
			if hook != nil {
				hook(st.name, offset, i)
			}
			switch {
			case r == nil:
				c.queue(s.out, frame, m.ReceivedAt, true)
			case s.out.pushHeld(frame, m.ReceivedAt, r):
				st.held = append(st.held, s.out) // a crash leaves them to the restart
			}
		}
		switch {
		case len(st.held) == 0: // a single publish, or a fan-out in slices
		case r.adopt(st.held):
			st.forgetHeld() // the request releases them
		default:
			c.releaseHeld() // the request has ended: this channel writes them
		}
		c.scheduleFlush(ctx)
	}
	ctx.Respond(&publishResult{Index: m.Index, Epoch: c.history.Epoch(), Offset: offset, Duplicate: dup})
	st.inflight = nil
}

func (c *channel) subscribe(ctx actor.Context, m *subscribe) {
	st := c.state
	if _, ok := st.index[m.Conn.Id]; ok {
		// The connection allows one subscription per channel, and asks
		// again only after an unsubscribe; nothing to do.
		return
	}
	out := c.cfg.outboxes.lookup(m.Conn.Id)
	if out == nil {
		return // the connection has stopped; its unsubscribe follows
	}
	h := c.history
	recoverable := false
	var replay [][]byte
	if m.HasSince && m.SinceEpoch == h.Epoch() {
		frames, ok, err := h.Since(c.cfg.Now(), m.SinceOffset)
		if err != nil {
			c.log.Error("history lookup failed", "err", err)
		}
		recoverable, replay = ok && err == nil, frames
	}
	// The ack, the replay and then live messages, all from this mailbox:
	// in order, with no gap and no duplicate.
	ack := func(recovered bool) []byte {
		return protocol.AppendSubAck(nil, m.ID, st.name, h.Epoch(), h.Latest(), recovered)
	}
	recovered, kick := out.pushSubscribed(ack, recoverable, replay)
	if kick {
		st.dirty = append(st.dirty, out)
	}
	if m.HasSince {
		if recovered {
			c.cfg.Metrics.ReplaysRecovered.Inc()
		} else {
			c.cfg.Metrics.ReplaysNotRecovered.Inc()
		}
	}
	c.scheduleFlush(ctx)
	st.index[m.Conn.Id] = len(st.subs)
	st.subs = append(st.subs, subscriber{pid: m.Conn, out: out})
	c.cfg.Metrics.SubscriptionsOpen.Inc()
}

func (c *channel) unsubscribe(ctx actor.Context, m *unsubscribe) {
	st := c.state
	var out *outbox
	if i, ok := st.index[m.Conn.Id]; ok {
		out = st.subs[i].out
		last := len(st.subs) - 1
		st.subs[i] = st.subs[last]
		st.index[st.subs[i].pid.Id] = i
		st.subs[last] = subscriber{}
		st.subs = st.subs[:last]
		delete(st.index, m.Conn.Id)
		c.cfg.Metrics.SubscriptionsOpen.Dec()
	}
	if m.Ack && out == nil {
		out = c.cfg.outboxes.lookup(m.Conn.Id) // not subscribed here (yet)
	}
	if m.Ack && out != nil {
		c.queue(out, protocol.AppendAck(nil, m.ID), 0, false)
		c.scheduleFlush(ctx)
	}
}

// releaseHeld releases the holds in held, which no request adopted, and
// takes on the flushes they leave (see outbox.release).
func (c *channel) releaseHeld() {
	st := c.state
	st.dirty = append(st.dirty, releaseAll(st.held)...)
	st.forgetHeld()
}

// forgetHeld empties held, keeping its array.
func (st *channelState) forgetHeld() {
	clear(st.held)
	st.held = st.held[:0]
}

// queue pushes a frame into a subscriber's outbox and remembers the outbox
// for the next flush when the push kicked it.
func (c *channel) queue(out *outbox, frame []byte, receivedAt int64, isMsg bool) {
	if out.push(frame, receivedAt, isMsg) {
		c.state.dirty = append(c.state.dirty, out)
	}
}

// scheduleFlush makes sure a flushNow is on its way when outboxes wait for
// one. It runs after what is already in the mailbox: under load, every
// publish queued meanwhile joins the same write.
func (c *channel) scheduleFlush(ctx actor.Context) {
	st := c.state
	if len(st.dirty) == st.flushed || st.flushPending {
		return
	}
	st.flushPending = true
	ctx.Send(ctx.Self(), &flushNow{})
}

// flushSlice writes the first outboxes this channel kicked, each with at
// most a few non-blocking writes (see outbox.flush), and leaves the rest
// for the next flushNow. A large fan-out is thus written in slices with the
// mailbox served between them: a publish that arrives meanwhile joins the
// next write of every outbox not yet written (those are still kicked) and
// kicks the ones already written again, at the end of dirty. The writes
// sweep the subscribers round and round, and a message waits at most one
// sweep, not the rest of the current fan-out and then its own. Coalescing
// does not suffer: each outbox is still written once per sweep.
//
// A slice is split across goroutines, one chunk per core, so that every
// core writes: one goroutine writing to a thousand sockets would hold all
// of them back by milliseconds. Order does not suffer: each outbox keeps
// its own.
func (c *channel) flushSlice() {
	st := c.state
	n := min(len(st.dirty)-st.flushed, flushSliceLen)
	// A crash in here keeps dirty for the restart's flush: flushing an
	// outbox twice is harmless (see outbox.flush).
	flushOutboxes(st.dirty[st.flushed : st.flushed+n])
	st.flushed += n
	switch {
	case st.flushed == len(st.dirty):
		st.resetDirty()
	case st.flushed > len(st.dirty)/2:
		// Drop the written half, so that a sweep costs no more than its
		// writes and dirty does not grow while it never empties.
		rest := copy(st.dirty, st.dirty[st.flushed:])
		clear(st.dirty[rest:])
		st.dirty, st.flushed = st.dirty[:rest], 0
	}
}

func (st *channelState) resetDirty() {
	clear(st.dirty)
	st.dirty, st.flushed = st.dirty[:0], 0
}

// flushOutboxes flushes outboxes on this goroutine, or in chunks, one per
// core, when there are many.
func flushOutboxes(outboxes []*outbox) {
	if chunk := max(len(outboxes)/cores+1, minFlushChunk); len(outboxes) > chunk {
		flushParallel(outboxes, chunk)
	} else {
		flushAll(outboxes)
	}
}

// cores is GOMAXPROCS, read once: runtime.GOMAXPROCS takes the scheduler's
// global lock, and the flush paths ask on every publish.
var cores = runtime.GOMAXPROCS(0)

// flushSliceLen is how many outboxes one flushNow writes: about half a
// millisecond of writes per core on loopback here (about 6 µs a write).
var flushSliceLen = 128 * cores

// flushParallel flushes outboxes in chunks, the first on this goroutine,
// and returns when all are done.
func flushParallel(outboxes []*outbox, chunk int) {
	var wg sync.WaitGroup
	for i := chunk; i < len(outboxes); i += chunk {
		wg.Go(func() { flushAll(outboxes[i:min(i+chunk, len(outboxes))]) })
	}
	flushAll(outboxes[:chunk])
	wg.Wait()
}

// minFlushChunk is the smallest fan-out worth a goroutine of its own:
// below it, starting one costs more than the writes it would take over.
const minFlushChunk = 64

func flushAll(outboxes []*outbox) {
	for _, o := range outboxes {
		o.flush()
	}
}

// armIdleCheck schedules the next look at whether the channel can passivate,
// unless it has subscribers or a look is already due. It does not use
// protoactor's ReceiveTimeout: that timer's goroutine writes the actor
// context's fields while the mailbox goroutine reads them (a data race in
// protoactor-go 3c0e61ca19c9, actor_context.go receiveTimeoutHandler, found
// by TestPassivationChurn), so a plain timer sends a message instead.
func (c *channel) armIdleCheck(ctx actor.Context) {
	if len(c.state.subs) > 0 || c.state.idleTimer != nil {
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.state.idleTimer = time.AfterFunc(c.cfg.idleCheck(), func() { root.Send(self, &idleTick{}) })
}

// checkIdle asks the registry to stop this channel when it has no
// subscribers and retains nothing; otherwise it looks again later. A
// channel with subscribers stops looking until the last one leaves.
func (c *channel) checkIdle(ctx actor.Context) {
	if len(c.state.subs) > 0 {
		return
	}
	if c.history.Trim(c.cfg.Now()) {
		// Request, not Send: the registry checks the sender.
		ctx.Request(ctx.Parent(), &channelIdle{Channel: c.state.name, Received: c.state.received})
	}
	c.armIdleCheck(ctx)
}

// idleCheck is how long a channel without subscribers waits between checks:
// a quarter of the retention, so it is freed soon after its last message
// expires, but never busier than every 10ms nor lazier than every 15s.
func (c *Config) idleCheck() time.Duration {
	return min(max(c.History.Retention/4, 10*time.Millisecond), 15*time.Second)
}
