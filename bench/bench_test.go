package bench_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/bench"
	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeChildEnv) != "" {
		fakeChild()
		return
	}
	// The in-process relay's protoactor system throttles dead-letter logs
	// (messages to connection actors that just stopped, which a bench's
	// closing burst produces) with a goroutine that ends after its 1s
	// DeadLetterThrottleInterval: bounded, not a leak.
	// The publishers' fasthttp client notices its connections are closed
	// only at the end of its cleaner's sleep (clientIdleTimeout).
	opts := append([]goleak.Option{
		goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	}, testutil.LeakOptions...)
	goleak.VerifyTestMain(m, opts...)
}

// fakeChildEnv makes this test binary a stand-in for a child relay or
// baseline (see TestSpawnRetriesATakenPort): it listens where the child's
// readiness is asked (--admin-listen or --baseline-serve), answers /readyz,
// and exits on SIGTERM; like the real child, it exits 1 when it cannot
// listen.
const fakeChildEnv = "REALTIME_BENCH_FAKE_CHILD"

func fakeChild() {
	var addr string
	for i, a := range os.Args[:len(os.Args)-1] {
		if a == "--admin-listen" || a == "--baseline-serve" {
			addr = os.Args[i+1]
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() { _ = http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
	os.Exit(0)
}

// smoke is a fanout small enough for -race on 2 cores: 2 channels x 5
// subscribers, 200 msg/s for a second and a half.
func smoke(cfg bench.Config) bench.Config {
	cfg.Channels, cfg.Subs, cfg.Rate, cfg.Duration = 2, 5, 200, 1500*time.Millisecond
	cfg.Concurrency, cfg.Publishers, cfg.SourceAddrs = 4, 2, 2
	return cfg
}

func assertDelivered(t *testing.T, res bench.Result) {
	t.Helper()
	assert.Empty(t, res.Failures)
	assert.Equal(t, 10, res.Conns)
	assert.Equal(t, int64(0), res.PublishErrors)
	assert.Positive(t, res.Published)
	assert.Equal(t, res.Published*5, res.Expected)
	assert.Equal(t, res.Expected, res.Delivered)
	assert.Equal(t, int64(0), res.Lost)
	assert.Equal(t, int64(0), res.Duplicated)
	assert.Equal(t, int64(0), res.Reordered)
	assert.Equal(t, int64(0), res.Extra)
	require.NotNil(t, res.Latency)
	assert.Equal(t, res.Delivered, res.Latency.Count)
}

// TestFanoutDashboards runs the dashboard shape: 2 dashboards of 3 gadgets
// (6 channels), 2 viewers each, so 4 connections of 3 subscriptions; a
// batch of 3 updates one dashboard. Every subscription's stream is checked
// as in the one-channel shape, and the relay writes each connection a
// batch's 3 messages in one write.
func TestFanoutDashboards(t *testing.T) {
	// Only a batch's last answer writes, so that the write count below does
	// not depend on how fast a loaded machine answers (the default hold is
	// 2 ms).
	relay := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.Actors.BatchHold = testutil.Wait })
	cfg := smoke(bench.Config{URL: "http://" + relay.Addr, Key: relay.Key, Batch: 3})
	cfg.Channels, cfg.Subs, cfg.Gadgets = 6, 2, 3
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	writes0 := relay.Metric(t, "realtime_socket_writes_total")
	res, err := bench.Run(ctx, cfg)
	require.NoError(t, err)
	assert.Empty(t, res.Failures)
	assert.Equal(t, 4, res.Conns)
	assert.Positive(t, res.Published)
	assert.Equal(t, res.Published*2, res.Expected, "each channel has 2 subscribers")
	assert.Equal(t, res.Expected, res.Delivered)
	assert.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Extra)
	require.NotNil(t, res.Latency)
	assert.Equal(t, res.Delivered, res.Latency.Count)
	// Writes: one per connection per batch, plus the subscriptions' acks
	// and the closes; one per message would be about three times more.
	writes := relay.Metric(t, "realtime_socket_writes_total") - writes0
	batches := float64(res.Published) / 3
	assert.Less(t, writes, 2*batches*2, "deliveries %d in %v writes", res.Delivered, writes)

	// The baseline takes the same shape: several subscriptions a connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- bench.ServeBaseline(ctx, ln) }()
	cfg.URL, cfg.Key = "http://"+ln.Addr().String(), testKey(t) // the baseline checks no token
	res, err = bench.Run(ctx, cfg)
	require.NoError(t, err)
	assert.Empty(t, res.Failures)
	assert.Equal(t, res.Published*2, res.Delivered)
	cancel()
	require.NoError(t, <-served)
}

func TestFanoutSmoke(t *testing.T) {
	for _, batch := range []int{1, 10} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			relay := testutil.StartRelay(t)
			cfg := smoke(bench.Config{URL: "http://" + relay.Addr, Key: relay.Key, Batch: batch})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := bench.Run(ctx, cfg)
			require.NoError(t, err)
			assertDelivered(t, res)
			assert.Nil(t, res.Server, "a URL target has no /proc numbers")
		})
	}
}

// TestFanoutChild runs the default target: a `realtime serve` child,
// built here, measured through /proc and stopped with SIGTERM; then the
// same load against the baseline child.
func TestFanoutChild(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "realtime")
	args := append([]string{"build", "-o", bin}, raceFlags...)
	out, err := exec.Command("go", append(args, "github.com/realtime-relay/realtime/cmd/realtime")...).CombinedOutput()
	require.NoError(t, err, "%s", out)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, smoke(bench.Config{ServerBinary: bin, ServerArgs: []string{"--send-queue-bytes=262144"}, Baseline: true}))
	require.NoError(t, err)
	assertDelivered(t, res)
	require.NotNil(t, res.Server)
	assert.Positive(t, res.Server.CPUSeconds)
	assert.Positive(t, res.Server.RSSBytes)
	require.NotNil(t, res.Baseline)
	assertDelivered(t, *res.Baseline)
	require.NotNil(t, res.Ratio)
	assert.Positive(t, res.Ratio.DeliveredPerSec)
}

// TestRampSmoke ramps to a cap with a latency bound every step meets, then
// with one no step can meet: a failed step is run RampAttempts times
// before the ramp gives up, and with no step held there is nothing to
// refine (TestRampNext covers the refinement's rates).
func TestRampSmoke(t *testing.T) {
	relay := testutil.StartRelay(t)
	ramp := func(maxP99 time.Duration) bench.Result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg := smoke(bench.Config{Scenario: bench.ScenarioRamp, URL: "http://" + relay.Addr, Key: relay.Key,
			RampFactor: 2, RampMaxRate: 80, MaxP99: maxP99})
		// Rates a loaded 2-core machine holds under -race: a step also
		// fails when the publishers fall below 95% of its rate.
		cfg.Rate, cfg.Duration = 40, time.Second
		res, err := bench.Run(ctx, cfg)
		require.NoError(t, err)
		assert.Zero(t, res.Lost)
		return res
	}

	// On a loaded machine the publishers, sharing the cores, may fall
	// short of a step's rate: the ramp then runs that step again, which is
	// what RampAttempts is for. No other failure is allowed.
	const short = "publishers reached only"
	res := ramp(10 * time.Second) // -race on 2 cores: the bound is not the point here
	var held []float64
	for _, st := range res.Steps {
		if st.Held {
			held = append(held, st.TargetRate)
		} else {
			assert.Contains(t, st.Why, short, "%+v", st)
		}
	}
	assert.Equal(t, []float64{40, 80}, held, "every rate held, at its first or second attempt")
	assert.InDelta(t, 80, res.CapacityRate, 0)

	res = ramp(time.Nanosecond)
	require.Len(t, res.Steps, 2, "the first step, and its second attempt")
	p99 := 0
	for _, st := range res.Steps {
		assert.False(t, st.Held)
		assert.False(t, st.Refine)
		assert.InDelta(t, 40, st.TargetRate, 0)
		if !strings.Contains(st.Why, short) {
			assert.Contains(t, st.Why, "p99")
			p99++
		}
	}
	assert.Positive(t, p99, "at least one attempt judged on its p99: %+v", res.Steps)
	assert.Zero(t, res.CapacityRate)
}

func TestConnectSmoke(t *testing.T) {
	relay := testutil.StartRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := bench.Run(ctx, bench.Config{Scenario: bench.ScenarioConnect, URL: "http://" + relay.Addr, Key: relay.Key,
		Conns: 50, Concurrency: 8, Hold: 100 * time.Millisecond})
	require.NoError(t, err)
	assert.Empty(t, res.Failures)
	assert.Equal(t, 50, res.Conns)
	assert.Positive(t, res.ConnectsPerSec)
}

// TestChurnSmoke reconnects each of 10 subscriptions about every 200 ms
// while publishing: every resubscribe must be recovered and every stream
// whole.
func TestChurnSmoke(t *testing.T) {
	relay := testutil.StartRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := smoke(bench.Config{Scenario: bench.ScenarioChurn, URL: "http://" + relay.Addr, Key: relay.Key, ReconnectRate: 50})
	res, err := bench.Run(ctx, cfg)
	require.NoError(t, err)
	assertDelivered(t, res)
	require.NotNil(t, res.Churn)
	assert.Positive(t, res.Churn.Reconnects)
	assert.Equal(t, res.Churn.Reconnects, res.Churn.Recovered)
	assert.Zero(t, res.Churn.NotRecovered)
	assert.Zero(t, res.Churn.Errors)
	assert.InDelta(t, 100.0, res.Churn.RecoveredPct, 0)
	require.NotNil(t, res.Churn.Latency)
}

// TestSlowSmoke stops one of each channel's five subscribers. With 32 KiB
// messages (3.2 MB/s per subscriber) the kernel's socket buffers and the
// 256 KiB send queue fill within a second, and the relay cuts them off:
// the other eight must lose nothing.
func TestSlowSmoke(t *testing.T) {
	relay := testutil.StartRelay(t, func(c *edge.Config) { c.Actors.SendQueueBytes = 256 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := smoke(bench.Config{Scenario: bench.ScenarioSlow, URL: "http://" + relay.Addr, Key: relay.Key,
		SlowFraction: 0.2, PayloadBytes: 32 << 10, Rate: 200,
		MaxP99Ratio: 1000}) // the smoke checks the cut-off, not latency under -race
	res, err := bench.Run(ctx, cfg)
	require.NoError(t, err)
	assert.Empty(t, res.Failures)
	require.NotNil(t, res.Slow)
	assert.Equal(t, 2, res.Slow.SlowSubs)
	assert.Equal(t, 8, res.Slow.FastSubs)
	assert.Equal(t, 2, res.Slow.Closed4008+res.Slow.ClosedConn, "closed by the relay")
	assert.Zero(t, res.Slow.NotClosed)
	assert.Equal(t, int64(-1), res.Slow.RelayDisconnects, "a URL target's metrics are not read")
	assert.Equal(t, res.Published*4, res.Expected, "only the fast subscribers are owed every message")
	assert.Equal(t, res.Expected, res.Delivered)
	assert.Zero(t, res.Lost)
	assert.Zero(t, res.Duplicated)
	assert.Zero(t, res.Disconnected)
	require.NotNil(t, res.Slow.NoSlow)
	require.NotNil(t, res.Latency)
	assert.Positive(t, res.Slow.P99Ratio)
}

func TestRelayDown(t *testing.T) {
	relay := testutil.StartRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A key the relay does not know: every upgrade is refused with 401.
	other := relay.Key
	other.Secret = append([]byte(nil), other.Secret...)
	other.Secret[0] ^= 1
	_, err := bench.Run(ctx, smoke(bench.Config{URL: "http://" + relay.Addr, Key: other}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 401")
}

func TestConfigValidate(t *testing.T) {
	f := func(name string, cfg bench.Config) {
		t.Run(name, func(t *testing.T) {
			_, err := bench.Run(context.Background(), cfg)
			assert.ErrorIs(t, err, bench.ErrConfig)
		})
	}
	f("unknown scenario", bench.Config{Scenario: "nope"})
	f("url without key", bench.Config{URL: "http://127.0.0.1:1"})
	f("bad url", bench.Config{URL: "ftp://x", Key: testKey(t)})
	f("tiny payload", bench.Config{PayloadBytes: 5})
	f("negative rate", bench.Config{Rate: -1})
	f("baseline with url", bench.Config{URL: "http://127.0.0.1:1", Key: testKey(t), Baseline: true})
	f("baseline with churn", bench.Config{Scenario: bench.ScenarioChurn, Baseline: true})
	f("negative reconnect rate", bench.Config{Scenario: bench.ScenarioChurn, ReconnectRate: -1})
	f("no slow subscriber", bench.Config{Scenario: bench.ScenarioSlow, Subs: 5, SlowFraction: 0.1})
	f("no fast subscriber", bench.Config{Scenario: bench.ScenarioSlow, Subs: 5, SlowFraction: 1})
	f("no ramp attempt", bench.Config{Scenario: bench.ScenarioRamp, RampAttempts: -1})
	f("gadgets not dividing channels", bench.Config{Channels: 10, Gadgets: 3})
	f("gadgets in churn", bench.Config{Scenario: bench.ScenarioChurn, Channels: 10, Gadgets: 5})
}

func testKey(t *testing.T) auth.Key {
	k, err := auth.GenerateKey("t")
	require.NoError(t, err)
	return k
}
