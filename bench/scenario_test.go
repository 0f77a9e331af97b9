package bench

import (
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/protocol"
)

func TestResubscribeAck(t *testing.T) {
	id := protocol.ID{N: 1, Set: true}
	msg := func(o uint64) []byte { return protocol.AppendMsg(nil, "s/d/g", benchEvent, "t", o) }
	// A subscription acked at 5 that received 6 and 7.
	start := func() *subscriber {
		s := &subscriber{channel: 0, acked: make(chan struct{})}
		s.handle(frames(protocol.AppendSubAck(nil, id, "s/d/g", "e1", 5, false), msg(6), msg(7)), 0)
		require.Equal(t, uint64(7), s.st.last)
		s.answered, s.rs.since = false, true
		return s
	}

	s := start()
	s.handle(frames(protocol.AppendSubAck(nil, id, "s/d/g", "e1", 9, true), msg(8), msg(9), msg(10)), 0)
	assert.Equal(t, int64(1), s.rs.recovered)
	assert.Equal(t, int64(2), s.rs.replayed, "8 and 9 came from the replay")
	assert.Equal(t, uint64(5), s.ackOffset, "the stream still starts at the first ack")
	lost, extra := s.st.lost(5 + 5)
	assert.Zero(t, lost)
	assert.Zero(t, extra)

	s = start()
	s.handle(frames(protocol.AppendSubAck(nil, id, "s/d/g", "e1", 9, false), msg(10)), 0)
	assert.Equal(t, int64(1), s.rs.notRecovered)
	lost, _ = s.st.lost(10)
	assert.Equal(t, int64(2), lost, "8 and 9 never come")

	s = start()
	s.handle(protocol.AppendSubAck(nil, id, "s/d/g", "e2", 3, true), 0)
	assert.Equal(t, int64(1), s.rs.notRecovered, "recovered in another epoch is not the same stream")
	assert.Equal(t, int64(1), s.st.resets)
}

func TestSinceFrame(t *testing.T) {
	f, err := protocol.DecodeClient(sinceFrame(nil, "s/d/g", []byte("3f9c"), 41))
	require.NoError(t, err)
	assert.Equal(t, protocol.OpSub, f.Op)
	assert.Equal(t, "s/d/g", f.Channel)
	require.NotNil(t, f.Since)
	assert.Equal(t, protocol.Since{Epoch: "3f9c", Offset: 41}, *f.Since)
}

func TestChurnPlan(t *testing.T) {
	start := time.Unix(100, 0)
	p := &churnPlan{start: start, period: time.Second, n: 4}
	assert.Equal(t, start, p.slot(0, 0))
	assert.Equal(t, start.Add(250*time.Millisecond), p.slot(1, 0))
	assert.Equal(t, start.Add(2750*time.Millisecond), p.slot(3, 2))
}

func TestSlowShare(t *testing.T) {
	f := func(subs int, fraction float64, want int) {
		c := Config{Subs: subs, SlowFraction: fraction}
		n := 0
		for j := range subs {
			if c.isSlow(j) {
				n++
			}
		}
		assert.Equal(t, want, c.slowPerChannel(), "subs %d fraction %g", subs, fraction)
		assert.Equal(t, want, n, "subs %d fraction %g", subs, fraction)
	}
	f(1000, 0.1, 100)
	f(30, 0.1, 3)
	f(10, 0.1, 1)
	f(5, 0.2, 1)
	f(5, 0.1, 0)
}

func TestSlowQueueDefault(t *testing.T) {
	f := func(args []string, want ...string) {
		c := Config{Scenario: ScenarioSlow, ServerArgs: args}
		c.setDefaults()
		assert.Equal(t, want, c.ServerArgs)
	}
	f(nil, defaultSlowQueue)
	f([]string{"--retention=1m"}, "--retention=1m", defaultSlowQueue)
	f([]string{"--send-queue-bytes=4096"}, "--send-queue-bytes=4096")
	f([]string{"-send-queue-bytes", "4096"}, "-send-queue-bytes", "4096")

	c := Config{Scenario: ScenarioFanout}
	c.setDefaults()
	assert.Empty(t, c.ServerArgs)
}

func TestParseMetrics(t *testing.T) {
	page := "# HELP x\n# TYPE x counter\nrealtime_slow_consumer_disconnects_total 3\n" +
		"realtime_connections_closed_total{reason=\"dead_peer\"} 2\ngo_gc_duration_seconds{quantile=\"0.5\"} 1.5e-05\n"
	m, err := parseMetrics(strings.NewReader(page))
	require.NoError(t, err)
	assert.Equal(t, map[string]float64{
		slowMetric: 3,
		`realtime_connections_closed_total{reason="dead_peer"}`: 2,
		`go_gc_duration_seconds{quantile="0.5"}`:                1.5e-05,
	}, m)
	_, err = parseMetrics(strings.NewReader("x nope\n"))
	assert.Error(t, err)
}

// TestEndedSubscriptionNotExpected: a subscription the relay ends stops
// counting toward the deliveries expected (else a ramp's later steps could
// never drain); one the run closes, or one never acked, is left counted
// as it was.
func TestEndedSubscriptionNotExpected(t *testing.T) {
	var live atomic.Int64
	var closing atomic.Bool
	var ctr counters
	sub := func(acked bool) *subscriber {
		s := &subscriber{channel: 0, ackOK: acked, live: &live, ctr: &ctr, closing: &closing,
			acked: make(chan struct{}), done: make(chan struct{})}
		s.group = []*subscriber{s}
		return s
	}
	live.Store(2)
	sub(true).end(closeError{4008})
	assert.Equal(t, int64(1), live.Load())
	sub(false).end(io.EOF)
	assert.Equal(t, int64(1), live.Load(), "never acked, never counted")
	closing.Store(true)
	sub(true).end(io.EOF)
	assert.Equal(t, int64(1), live.Load(), "closed by the run")
	assert.Equal(t, int64(2), ctr.readErrors.Load())
}
