package edge_test

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// TestChannelPanicMidFanout crashes a channel actor half-way through handing
// one message to its subscribers: the 5 subscribers before the crash got the
// message, the 5 after did not. Every one of them then gets a reset (the
// first 5 after the message, none of them twice), live delivery resumes in
// the new epoch with nothing skipped, the publisher of the crashing message
// is answered 503 unavailable, the restart is counted, and once the clients
// leave the relay is back to its goroutines and frees the channel.
func TestChannelPanicMidFanout(t *testing.T) {
	const subscribers, crashAt, crashOffset, retention = 10, 5, 3, time.Second
	ch := testutil.Channel("fragile")
	var crashed atomic.Bool
	clock := testutil.NewClock()
	r := testutil.StartRelay(t, clocked(clock, retention), func(cfg *edge.Config) {
		// Longer than the HTTP client waits: the 503 below must come from
		// the restart answering the publisher, not from the timeout.
		cfg.Actors.PublishTimeout = 3 * testutil.Wait
		cfg.Actors.BeforeDeliverForTest = func(channel string, offset uint64, i int) {
			if channel == ch && offset == crashOffset && i == crashAt && crashed.CompareAndSwap(false, true) {
				panic("BeforeDeliverForTest: crash mid-fan-out")
			}
		}
	})
	pub, sub := r.PublishToken(t), r.SubscribeToken(t)
	// The baseline is taken once the relay has served a connection and a
	// publish: fasthttp starts process-wide goroutines (its date updater,
	// its worker pool's cleaner) on first use.
	warm := r.Dial(t, sub)
	warm.Subscribe(1, testutil.Channel("warm-up"))
	requireLive(t, r, pub, testutil.Channel("warm-up"), warm)
	warm.Close()
	r.WaitMetric(t, "realtime_connections", 0)
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	baseGoroutines := serverGoroutines()

	// Subscribed one after the other, so that the channel's fan-out order is
	// the clients' order.
	clients := make([]*testutil.Client, subscribers)
	var oldEpoch string
	for i := range clients {
		clients[i] = r.Dial(t, sub)
		oldEpoch = clients[i].Subscribe(1, ch).Epoch
	}
	_, last := publishN(t, r, pub, ch, crashOffset-1)
	for _, c := range clients {
		requireMsgs(t, c, ch, 1, last)
	}

	status, body := r.Post(t, "/v1/publish", pub, marshal(t, testutil.Publication{Channel: ch, Event: "Crash", Data: "crash"}))
	assert.Equal(t, http.StatusServiceUnavailable, status, body)
	assert.Equal(t, "unavailable", decodeResult(t, body).Error.Code)
	require.True(t, crashed.Load(), "the hook never crashed the channel")
	assert.InDelta(t, 1, r.Metric(t, `realtime_publishes_total{result="unavailable"}`), 0)

	var newEpoch string
	for i, c := range clients {
		if i < crashAt {
			f := c.NextOp("msg")
			assert.Equal(t, uint64(crashOffset), f.Offset, "client %d", i)
			assert.Equal(t, "crash", f.Data, "client %d", i)
		}
		f := c.NextOp("reset")
		assert.Equal(t, ch, f.Ch)
		assert.NotEqual(t, oldEpoch, f.Epoch, "client %d", i)
		assert.Equal(t, uint64(0), f.Offset, "client %d", i)
		if newEpoch == "" {
			newEpoch = f.Epoch
		}
		assert.Equal(t, newEpoch, f.Epoch, "client %d: every subscriber is reset to the same epoch", i)
	}
	r.WaitMetric(t, "realtime_channel_restarts_total", 1)
	assert.InDelta(t, subscribers, r.Metric(t, "realtime_subscriptions"), 0)

	// Live delivery resumes in the new epoch and reaches all ten: each
	// client's next frames are exactly offsets 1..n, so none got the
	// crashing message twice, and nothing after the reset is skipped.
	const after = 5
	for n := 1; n <= after; n++ {
		res := r.PublishOne(t, pub, testutil.Publication{Channel: ch, Event: "After", Data: "after-" + strconv.Itoa(n)})
		assert.Equal(t, newEpoch, res.Epoch)
		assert.Equal(t, uint64(n), res.Offset)
	}
	for i, c := range clients {
		for n := 1; n <= after; n++ {
			f := c.NextOp("msg")
			assert.Equal(t, uint64(n), f.Offset, "client %d", i)
			assert.Equal(t, "after-"+strconv.Itoa(n), f.Data, "client %d", i)
		}
		c.NoFrame(50 * time.Millisecond)
	}
	assert.InDelta(t, 1, r.Metric(t, "realtime_channel_restarts_total"), 0, "one crash, one restart")

	// Everyone leaves: no goroutine of theirs stays, and the restarted
	// channel still passivates once its messages have expired.
	for _, c := range clients {
		c.Close()
	}
	r.WaitMetric(t, "realtime_connections", 0)
	r.WaitMetric(t, "realtime_subscriptions", 0)
	clock.Advance(retention + time.Millisecond)
	r.WaitMetric(t, "realtime_channels", 0)
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	// +1: Eventually runs the condition on a goroutine of its own.
	require.Eventually(t, func() bool { return serverGoroutines() <= baseGoroutines+1 }, testutil.Wait, 20*time.Millisecond,
		"goroutines: %d before the clients came, %d after they left", baseGoroutines, serverGoroutines())
}
