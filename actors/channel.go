package actors

import (
	"log/slog"
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
	subs  []*actor.PID
	index map[string]int
	// received counts the routed messages handled, for passivation.
	received uint64
	// incarnations counts Started messages: above 1 means a restart.
	incarnations int
	// inflight is the sender of the publish being handled, so that the
	// publisher gets an answer even when handling it crashes the actor.
	inflight *actor.PID
	// idleTimer is the pending idle check, nil when none. It lives here so
	// that a restart does not start a second chain of checks.
	idleTimer *time.Timer
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
	})
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
		c.unsubscribe(m.Conn)
		c.armIdleCheck(ctx)
	case *idleTick:
		c.state.idleTimer = nil
		c.checkIdle(ctx)
	case *crashForTest:
		panic("crashForTest")
	case *actor.Stopped:
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
		ctx.Send(st.inflight, &publishResult{Err: errUnavailable})
		st.inflight = nil
	}
	r := &reset{
		Channel: st.name,
		Offset:  c.history.Latest(),
		Frame:   protocol.AppendReset(nil, st.name, c.history.Epoch(), c.history.Latest()),
	}
	for _, pid := range st.subs {
		ctx.Send(pid, r)
	}
	c.armIdleCheck(ctx)
}

func (c *channel) publish(ctx actor.Context, m *publish) {
	st := c.state
	st.inflight = ctx.Sender()
	offset, frame, dup, err := c.history.Append(c.cfg.Now(), m.IdempotencyKey, func(offset uint64) []byte {
		return protocol.AppendMsg(nil, m.Channel, m.Event, m.Data, offset)
	})
	if err != nil {
		c.log.Error("history append failed", "err", err)
		ctx.Respond(&publishResult{Err: errUnavailable})
		st.inflight = nil
		return
	}
	if !dup {
		d := &deliver{Channel: m.Channel, Offset: offset, Frame: frame, ReceivedAt: m.ReceivedAt}
		for i, pid := range st.subs {
			if c.cfg.BeforeDeliverForTest != nil {
				c.cfg.BeforeDeliverForTest(st.name, offset, i)
			}
			ctx.Send(pid, d)
		}
	}
	ctx.Respond(&publishResult{Epoch: c.history.Epoch(), Offset: offset, Duplicate: dup})
	st.inflight = nil
}

func (c *channel) subscribe(ctx actor.Context, m *subscribe) {
	st := c.state
	h := c.history
	recovered := false
	var replay [][]byte
	if m.HasSince {
		if m.SinceEpoch == h.Epoch() {
			frames, ok, err := h.Since(c.cfg.Now(), m.SinceOffset)
			if err != nil {
				c.log.Error("history lookup failed", "err", err)
			}
			recovered, replay = ok && err == nil && fits(frames, m.MaxReplayBytes, m.MaxReplayMessages), frames
		}
		if recovered {
			c.cfg.Metrics.ReplaysRecovered.Inc()
		} else {
			c.cfg.Metrics.ReplaysNotRecovered.Inc()
			replay = nil
		}
	}
	latest := h.Latest()
	ctx.Send(m.Conn, &subscribed{
		Channel: st.name,
		Ack:     protocol.AppendSubAck(nil, m.ID, st.name, h.Epoch(), latest, recovered),
		Replay:  replay,
		Offset:  latest,
	})
	if _, ok := st.index[m.Conn.Id]; ok {
		return // a repeated subscribe: the subscriber is already in the list
	}
	st.index[m.Conn.Id] = len(st.subs)
	st.subs = append(st.subs, m.Conn)
	c.cfg.Metrics.SubscriptionsOpen.Inc()
}

func (c *channel) unsubscribe(pid *actor.PID) {
	st := c.state
	i, ok := st.index[pid.Id]
	if !ok {
		return
	}
	last := len(st.subs) - 1
	st.subs[i] = st.subs[last]
	st.index[st.subs[i].Id] = i
	st.subs[last] = nil
	st.subs = st.subs[:last]
	delete(st.index, pid.Id)
	c.cfg.Metrics.SubscriptionsOpen.Dec()
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

// fits reports whether frames stay within a subscriber's queue bounds.
func fits(frames [][]byte, maxBytes, maxMessages int) bool {
	if len(frames) > maxMessages {
		return false
	}
	n := 0
	for _, f := range frames {
		n += len(f) + 1
	}
	return n <= maxBytes
}
