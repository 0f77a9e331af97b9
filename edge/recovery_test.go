package edge_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// TestRecovery reconnects a client that saw offsets 1..3 while 4..6 were
// published, asking to recover in various ways, and checks the ack, the
// replay and that live delivery follows without a duplicate or a gap.
func TestRecovery(t *testing.T) {
	const retention = time.Minute
	const seen, latest = 3, 6
	cases := []struct {
		name string
		// since returns what the client asks for, given the channel's epoch.
		since func(epoch string) (string, uint64)
		// advance moves the relay's clock before the reconnect.
		advance       time.Duration
		wantRecovered bool
		// replayFrom is the first replayed offset when recovered.
		replayFrom uint64
	}{
		{"within the window", func(e string) (string, uint64) { return e, seen }, 0, true, seen + 1},
		{"from the start", func(e string) (string, uint64) { return e, 0 }, 0, true, 1},
		{"just before retention ends", func(e string) (string, uint64) { return e, seen }, retention - time.Second, true, seen + 1},
		{"nothing missed", func(e string) (string, uint64) { return e, latest }, 0, true, latest + 1},
		{"beyond retention", func(e string) (string, uint64) { return e, seen }, 2 * retention, false, 0},
		{"other epoch", func(string) (string, uint64) { return "0123456789ab", seen }, 0, false, 0},
		{"offset in the future", func(e string) (string, uint64) { return e, latest + 10 }, 0, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := testutil.NewClock()
			r := testutil.StartRelay(t, clocked(clock, retention))
			pub, sub := r.PublishToken(t), r.SubscribeToken(t)
			ch := testutil.Channel("recovery")
			// The keeper stays subscribed, so that the channel lives on and
			// only its retention decides what can be recovered.
			keeper := r.Dial(t, sub)
			keeper.Subscribe(1, ch)

			first := r.Dial(t, sub)
			epoch := first.Subscribe(1, ch).Epoch
			require.NotEmpty(t, epoch)
			_, last := publishN(t, r, pub, ch, seen)
			require.Equal(t, uint64(seen), last)
			requireMsgs(t, first, ch, 1, seen)
			first.Close()
			<-first.Closed()
			_, last = publishN(t, r, pub, ch, latest-seen)
			require.Equal(t, uint64(latest), last)
			clock.Advance(tc.advance)

			c := r.Dial(t, sub)
			sinceEpoch, sinceOffset := tc.since(epoch)
			ack := c.SubscribeSince(2, ch, sinceEpoch, sinceOffset)
			assert.Equal(t, ch, ack.Ch)
			assert.Equal(t, epoch, ack.Epoch)
			assert.Equal(t, uint64(latest), ack.Offset)
			assert.Equal(t, tc.wantRecovered, *ack.Recovered)
			if tc.wantRecovered {
				requireMsgs(t, c, ch, tc.replayFrom, latest)
			}
			requireMsgs(t, keeper, ch, 1, latest)
			// The next frame is the live message: nothing replayed when not
			// recovered, nothing replayed twice when recovered.
			requireLive(t, r, pub, ch, c, keeper)

			outcome := `realtime_replays_total{outcome="not_recovered"}`
			if tc.wantRecovered {
				outcome = `realtime_replays_total{outcome="recovered"}`
			}
			assert.InDelta(t, 1, r.Metric(t, outcome), 0)
		})
	}
}

// TestRecoveryBoundaryUnderConcurrentPublishing subscribes with since while
// several publishers keep publishing, and checks that the replay and the
// live stream join with every offset exactly once, in order.
func TestRecoveryBoundaryUnderConcurrentPublishing(t *testing.T) {
	const rounds, publishers, perPublisher, before = 5, 4, 25, 5
	r := testutil.StartRelay(t)
	pub, sub := r.PublishToken(t), r.SubscribeToken(t)
	for round := range rounds {
		ch := testutil.Channel("boundary-" + u(uint64(round)))
		epoch, since := publishN(t, r, pub, ch, before)
		var wg sync.WaitGroup
		var published atomic.Int64
		var once sync.Once
		started := make(chan struct{})
		for range publishers {
			wg.Go(func() {
				for range perPublisher {
					_, err := r.TryPublish(pub, testutil.Publication{Channel: ch, Event: "Tick", Data: "x"})
					assert.NoError(t, err)
					if published.Add(1) == publishers {
						once.Do(func() { close(started) })
					}
				}
			})
		}
		// Subscribe once publishing is under way, so that some messages are
		// replayed and others arrive live.
		<-started
		c := r.Dial(t, sub)
		ack := c.SubscribeSince(1, ch, epoch, since)
		require.True(t, *ack.Recovered, "round %d", round)
		require.Equal(t, epoch, ack.Epoch)
		t.Logf("round %d: replayed %d..%d, live after", round, since+1, ack.Offset)
		wg.Wait()
		requireMsgs(t, c, ch, since+1, before+publishers*perPublisher)
		requireLive(t, r, pub, ch, c)
		c.Close()
	}
}

// TestReplayLargerThanTheQueue: a since whose replay would not fit the
// connection's outbound queue is answered recovered:false (refetch), not
// cut off with 4008, and live messages follow on the same connection.
func TestReplayLargerThanTheQueue(t *testing.T) {
	const queue, size = 64 << 10, 8 << 10
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.Actors.SendQueueBytes = queue })
	pub, sub := r.PublishToken(t), r.SubscribeToken(t)
	ch := testutil.Channel("big-replay")
	keeper := r.Dial(t, sub)
	epoch := keeper.Subscribe(1, ch).Epoch
	data := strings.Repeat("x", size)
	for range 2 * queue / size { // twice the queue, retained
		r.Publish(t, pub, ch, "Tick", data)
	}

	c := r.Dial(t, sub)
	ack := c.SubscribeSince(1, ch, epoch, 0)
	require.NotNil(t, ack.Recovered)
	assert.False(t, *ack.Recovered, "a replay past the queue's bound is a refetch")
	last := r.Publish(t, pub, ch, "Tick", "live")
	f := c.NextOp("msg")
	assert.Equal(t, last, f.Offset, "live messages follow, no replay")
	assert.InDelta(t, 0, r.Metric(t, `realtime_connections_closed_total{reason="slow_consumer"}`), 0)
}
