package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/protocol"
	"github.com/realtime-relay/realtime/internal/testutil"
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

// Four publishers at 12.5 requests a second each post 50 a second evenly,
// one every 20 ms, not four at the same instant every 80 ms.
func TestPublishersTakeTurns(t *testing.T) {
	start := time.Unix(100, 0)
	var sends []time.Time
	for i := range 4 {
		s := staggered(start, 12.5, i, 4)
		for k := range 5 {
			sends = append(sends, s.at(k))
		}
	}
	slices.SortFunc(sends, time.Time.Compare)
	for i, at := range sends {
		assert.Equal(t, start.Add(time.Duration(i)*20*time.Millisecond), at, "send %d", i)
	}
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

// TestSpawnRetriesATakenPort: another process takes the child's port
// between freePorts and the child's listen, and answers /readyz there as a
// relay would. That answer must not count as the child's: the child fails
// to listen, and is started again on other ports.
func TestSpawnRetriesATakenPort(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer other.Close()
	taken := other.Listener.Addr().String()
	calls := 0
	freePortsFn = func(n int) ([]string, error) {
		if calls++; calls == 1 {
			return []string{taken}, nil
		}
		return freePorts(n)
	}
	defer func() { freePortsFn = freePorts }()
	t.Setenv("REALTIME_BENCH_FAKE_CHILD", "1") // the child is this test binary (see TestMain)
	self, err := os.Executable()
	require.NoError(t, err)

	tg, err := startBaseline(t.Context(), &Config{ServerBinary: self})
	require.NoError(t, err)
	assert.NotEqual(t, taken, tg.base.Host, "the other process's answer was taken for the child's")
	assert.Equal(t, 2, calls)
	require.NoError(t, tg.stop())
}

// TestChildFailureFailsTheRun: a child relay that exits during the run (or
// whose shutdown fails) fails the run, whatever the scenario measured.
func TestChildFailureFailsTheRun(t *testing.T) {
	relay := testutil.StartRelay(t)
	start := func(context.Context, *Config) (*target, error) {
		tg := &target{name: "relay", base: &url.URL{Scheme: "http", Host: relay.Addr}, key: relay.Key,
			stderr: &tailBuffer{max: 4 << 10}, exited: make(chan struct{})}
		tg.cmd = exec.Command("sh", "-c", "exit 3") // the "child" crashes; the relay above serves
		require.NoError(t, tg.cmd.Start())
		go func() { tg.waitErr = tg.cmd.Wait(); close(tg.exited) }()
		return tg, nil
	}
	cfg := Config{Scenario: ScenarioConnect, Conns: 5, Concurrency: 2, Hold: 100 * time.Millisecond, SourceAddrs: 1}
	cfg.setDefaults()
	res, err := runAgainst(context.Background(), cfg, start)
	require.NoError(t, err)
	assert.False(t, res.OK())
	require.NotEmpty(t, res.Failures)
	assert.Contains(t, res.Failures[0], "exit status 3")
}

// TestResetNotCountedAsLoss: after a reset (the channel's actor
// restarted), offsets start again in a new epoch; the subscription counts
// a reset, which fails the run, and not the messages before it as lost,
// and churn's next resubscribe names the new epoch.
func TestResetNotCountedAsLoss(t *testing.T) {
	const ch = "s/d/g0"
	msg := func(o uint64) []byte { return protocol.AppendMsg(nil, ch, benchEvent, "t", o) }
	s := &subscriber{channel: 0, acked: make(chan struct{})}
	s.handle(frames(protocol.AppendSubAck(nil, protocol.ID{N: 1, Set: true}, ch, "e1", 0, false), msg(1), msg(2), msg(3), msg(4), msg(5)), 0)
	s.handle(frames(protocol.AppendReset(nil, ch, "e2", 0), msg(1), msg(2), msg(3)), 0)
	r := &run{subs: []*subscriber{s}, published: make([]atomic.Int64, 1)}
	r.published[0].Store(8)
	r.collectStreams()
	assert.Equal(t, int64(1), r.res.Resets)
	assert.Zero(t, r.res.Lost, "all 8 arrived")
	assert.Zero(t, r.res.Duplicated)
	assert.Equal(t, "e2", string(s.rs.epoch))
	r.judge()
	assert.Equal(t, []string{"1 channel resets"}, r.res.Failures)
}

// TestSlowNeeds4008: slow subscribers closed otherwise than with 4008, or
// fewer 4008 closes counted by the relay than slow subscribers, fail the
// slow scenario.
func TestSlowNeeds4008(t *testing.T) {
	for name, sl := range map[string]SlowStats{
		"another code":          {SlowSubs: 2, FastSubs: 8, Closed4008: 0, ClosedOther: 2, RelayDisconnects: -1},
		"relay counted no 4008": {SlowSubs: 2, FastSubs: 8, ClosedConn: 2, RelayDisconnects: 0},
	} {
		r := &run{cfg: Config{MaxP99Ratio: 2}, res: Result{Scenario: ScenarioSlow, Slow: &sl}}
		r.judge()
		assert.NotEmpty(t, r.res.Failures, name)
	}
	sl := SlowStats{SlowSubs: 2, FastSubs: 8, Closed4008: 1, ClosedConn: 1, RelayDisconnects: 2}
	r := &run{cfg: Config{MaxP99Ratio: 2}, res: Result{Scenario: ScenarioSlow, Slow: &sl}}
	r.judge()
	assert.Empty(t, r.res.Failures, "the relay closed both; one close frame was lost with the unread bytes")
}

// TestInterruptedRunIsAnError: a run cut short (a signal cancels its
// context), while subscribing or while publishing, is an error, not a
// result with rates over a duration that did not run.
func TestInterruptedRunIsAnError(t *testing.T) {
	for _, publishing := range []bool{false, true} {
		t.Run(fmt.Sprintf("publishing=%v", publishing), func(t *testing.T) {
			relay := testutil.StartRelay(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg := Config{URL: "http://" + relay.Addr, Key: relay.Key, Channels: 2, Subs: 5,
				Rate: 400, Duration: time.Minute, Publishers: 2, Concurrency: 4, SourceAddrs: 2}
			done := make(chan error, 1)
			go func() { _, err := Run(ctx, cfg); done <- err }()
			if publishing {
				require.Eventually(t, func() bool {
					return relay.Metric(t, `realtime_publishes_total{result="ok"}`) > 0
				}, testutil.Wait, 10*time.Millisecond)
			}
			cancel()
			select {
			case err := <-done:
				require.ErrorIs(t, err, context.Canceled)
			case <-time.After(testutil.Wait):
				t.Fatal("the cancelled run did not end")
			}
		})
	}
}
