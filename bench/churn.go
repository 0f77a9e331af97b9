package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/realtime-relay/realtime/internal/protocol"
)

// resubscribeAckTimeout bounds the wait for a resubscribe's ack; past it
// the reconnect counts as failed and is tried again.
const resubscribeAckTimeout = 10 * time.Second

// redialPause is the wait before trying a failed reconnect again.
const redialPause = 50 * time.Millisecond

// resumes is one subscription's reconnect bookkeeping in churn.
//
// Owned by the subscriber's reader goroutine until it exits.
type resumes struct {
	epoch     []byte    // the stream's epoch, from the first ack
	since     bool      // the current connection's sub carried since
	replayTo  uint64    // offsets up to it, after a recovered ack, are replay
	droppedAt time.Time // when the previous connection was dropped
	slot      int       // the next reconnect slot not yet used
	frame     []byte    // reused sub request

	acks         int64 // resubscribes answered
	recovered    int64
	notRecovered int64
	errors       int64 // reconnects that failed: dial, write or no ack in time
	replayed     int64 // msgs that came from the relay's replay buffer
	lastErr      error
}

// churnPlan says when churn's subscriptions reconnect: subscription i of
// n at start + (i/n + k) x period, for k = 0, 1, ... while before end, so
// that n/period reconnects a second are spread evenly over time.
type churnPlan struct {
	start, end time.Time
	period     time.Duration
	n          int
}

func (p *churnPlan) slot(i, k int) time.Time {
	return p.start.Add(time.Duration(float64(p.period) * (float64(i)/float64(p.n) + float64(k))))
}

// churn subscribes, then publishes for Duration while every subscription
// drops its connection and resubscribes with since on a new one, and
// checks that every resubscribe was recovered and every stream is whole.
func (r *run) churn(ctx context.Context) error {
	r.setShape()
	r.res.Churn = &ChurnStats{TargetRate: r.cfg.ReconnectRate}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.loops, r.stopLoops = ctx, cancel
	if err := r.subscribeAll(ctx); err != nil {
		return err
	}
	subscribed, _ := r.t.stats()
	n := len(r.subs)
	start := time.Now()
	plan := &churnPlan{start: start, end: start.Add(r.cfg.Duration), n: n,
		period: time.Duration(float64(n) / r.cfg.ReconnectRate * float64(time.Second))}
	r.plan.Store(plan)
	// Each reader is blocked on its first connection, whose ack came
	// before the plan: arm its first reconnect here.
	for _, s := range r.subs {
		s.connMu.Lock()
		_ = s.conn.nc.SetReadDeadline(plan.slot(s.n, 0))
		s.connMu.Unlock()
	}
	ph := r.publishPhase(ctx, r.cfg.Rate, r.cfg.Duration)
	r.fillPhase(ph, subscribed)
	r.closeAll()
	r.collectStreams()

	c := r.res.Churn
	var lastErr error
	for _, s := range r.subs {
		c.Reconnects += s.rs.acks
		c.Recovered += s.rs.recovered
		c.NotRecovered += s.rs.notRecovered
		c.Errors += s.rs.errors
		c.Replayed += s.rs.replayed
		if s.rs.lastErr != nil && lastErr == nil {
			lastErr = s.rs.lastErr
		}
	}
	if lastErr != nil {
		r.noteErr(fmt.Errorf("reconnect: %w", lastErr))
	}
	c.PerSec = float64(c.Reconnects) / r.cfg.Duration.Seconds()
	if c.Reconnects > 0 {
		c.RecoveredPct = 100 * float64(c.Recovered) / float64(c.Reconnects)
	}
	c.Latency = latencyOf(r.reconnectLat.merged())
	if r.res.Server != nil && c.Reconnects > 0 {
		c.ServerCPUMicros = r.res.Server.CPUSeconds * 1e6 / float64(c.Reconnects)
	}
	return nil
}

// fillPhase records a fanout-shaped phase in the result.
func (r *run) fillPhase(ph phase, subscribed procStats) {
	r.res.Seconds = r.cfg.Duration.Seconds()
	r.res.Published = ph.published
	r.res.PublishErrors = r.ctr.publishErrors.Load()
	r.res.PublishedPerSec = float64(ph.published) / r.cfg.Duration.Seconds()
	r.res.Delivered = ph.delivered
	r.res.DeliveredPerSec = float64(ph.delivered) / r.cfg.Duration.Seconds()
	r.res.Latency = latencyOf(r.lat.merged())
	r.res.LoadgenCPUSeconds = ph.loadgenCPU.Seconds()
	if s, ok := r.t.stats(); ok {
		r.res.Server = r.serverStats(s, r.readyStats, ph.serverCPU)
		r.res.Server.BytesPerConn = perConn(subscribed.rssBytes-r.readyStats.rssBytes, r.conns())
		if ph.delivered > 0 {
			r.res.Server.CPUMicrosPerMsg = float64(ph.serverCPU.Microseconds()) / float64(ph.delivered)
		}
	}
}

// churnLoop is churn's readLoop: it reads until the deadline of its next
// reconnect slot fires, then drops the connection and resubscribes with
// since on a new one, until the run closes it. It runs on its own
// goroutine and is the only user of s.conn after the first sub was sent,
// but for closeAll's close and the run arming the first deadline (both
// under connMu).
func (r *run) churnLoop(ctx context.Context, s *subscriber) {
	defer close(s.done)
	defer s.closeAcked() // when it ends before the first answer
	first := true        // no ack yet on the first connection
	for {
		p, err := s.conn.readMessage()
		if err != nil {
			s.ctr.open.Add(-1)
			if s.closing.Load() {
				return
			}
			timeout := errors.Is(err, os.ErrDeadlineExceeded)
			switch {
			case timeout && s.answered:
				s.rs.slot++ // the slot this connection waited for
			case timeout:
				s.rs.errors++
				s.rs.lastErr = fmt.Errorf("no answer to a resubscribe within %s", resubscribeAckTimeout)
			default:
				// The relay closed it, or the connection failed.
				if ce := (closeError{}); errors.As(err, &ce) {
					s.closeCode = ce.code
				}
				s.readErr = err
				s.ctr.readErrors.Add(1)
			}
			if first {
				return // as readLoop: subscribeAll reports it
			}
			s.conn.close()
			s.rs.droppedAt = time.Now()
			if !r.resubscribe(ctx, s) {
				return
			}
			continue
		}
		wasAnswered := s.answered
		msgs := s.handle(p, time.Now().UnixNano())
		s.count(msgs)
		if wasAnswered || !s.answered {
			continue
		}
		if first {
			// The run arms the first slot once every subscription is
			// acked (handle closed acked); arming here could undo it.
			first = false
			continue
		}
		if !s.ackOK { // an err answer: no subscription behind this connection
			s.rs.errors++
			s.rs.lastErr = fmt.Errorf("resubscribe answered err %q", s.ackErr)
			r.armNext(s) // the next slot tries again
			continue
		}
		r.reconnectLat.record(s.n, []int64{time.Since(s.rs.droppedAt).Microseconds()})
		s.ctr.reconnects.Add(1)
		r.armNext(s)
	}
}

// armNext sets the current connection's read deadline to the next
// reconnect slot, skipping slots more than a period late (a reconnect
// that took that long), or clears it once the plan has ended.
func (r *run) armNext(s *subscriber) {
	p := r.plan.Load()
	late := time.Now().Add(-p.period)
	for p.slot(s.n, s.rs.slot).Before(late) {
		s.rs.slot++
	}
	at := p.slot(s.n, s.rs.slot)
	if !at.Before(p.end) {
		at = time.Time{}
	}
	_ = s.conn.nc.SetReadDeadline(at)
}

// resubscribe opens a new connection for s and sends its sub with since
// (the epoch and the last offset it processed), trying again until it
// succeeds or the run closes. It reports false when the run is closing.
func (r *run) resubscribe(ctx context.Context, s *subscriber) bool {
	for {
		c, err := r.dialer.dial(ctx, s.n, r.subToken, false)
		if err == nil {
			_ = c.nc.SetReadDeadline(time.Now().Add(resubscribeAckTimeout))
			s.rs.frame = sinceFrame(s.rs.frame[:0], r.channels[s.channel], s.rs.epoch, s.st.last)
			if err = c.writeFrame(opText, s.rs.frame); err != nil {
				_ = c.nc.Close()
			}
		}
		if err != nil {
			if ctx.Err() != nil || s.closing.Load() {
				return false
			}
			s.rs.errors++
			s.rs.lastErr = err
			select {
			case <-ctx.Done():
				return false
			case <-time.After(redialPause):
			}
			continue
		}
		s.connMu.Lock()
		s.conn = c
		closing := s.closing.Load() // closeAll may have passed s already
		s.connMu.Unlock()
		if closing {
			c.close()
			return false
		}
		s.ctr.open.Add(1)
		s.answered, s.ackOK, s.ackErr, s.rs.since = false, false, "", true
		return true
	}
}

// sinceFrame appends the sub request for ch that resumes after offset of
// epoch.
func sinceFrame(dst []byte, ch string, epoch []byte, offset uint64) []byte {
	dst = append(dst, `{"op":"sub","id":1,"ch":`...)
	dst = protocol.AppendString(dst, ch)
	dst = append(dst, `,"since":{"epoch":`...)
	dst = protocol.AppendString(dst, string(epoch))
	dst = append(dst, `,"offset":`...)
	dst = fmt.Appendf(dst, "%d}}", offset)
	return dst
}
