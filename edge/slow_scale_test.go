package edge_test

import (
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// stoppableReader reads and discards what the relay sends a RawConn until
// stop, then never reads again: a client that stops reading mid-stream.
type stoppableReader struct {
	conn *testutil.RawConn
	stop chan struct{}
	done chan struct{}
}

func startReader(conn *testutil.RawConn) *stoppableReader {
	r := &stoppableReader{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 16<<10)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
			select {
			case <-r.stop:
				return
			default:
			}
		}
	}()
	return r
}

// Stop stops reading and waits until the reader is gone.
func (r *stoppableReader) Stop() {
	close(r.stop)
	_ = r.conn.SetReadDeadline(time.Now()) // ends a Read in progress
	<-r.done
}

// percentile returns the p-th percentile (0 < p <= 1) of ds, which it sorts.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

// TestSlowConsumersAtScale has 1,000 subscribers on one channel and
// publishes at a steady rate twice: once with everyone reading (the
// no-slow run), once with 10% of them stopping to read early in the run.
// The stalled ones are cut off (4008), the relay's heap stays within their
// queues' bound, the other 90% miss nothing, and their p99 receive latency
// stays within twice the no-slow run's.
func TestSlowConsumersAtScale(t *testing.T) {
	// The heap bound compares the heap's growth in the two runs, so the
	// test runs in a process of its own: in this one, the relays of the
	// tests before it stay reachable for up to 10 s after they shut down
	// (fasthttp's worker pool cleaner sleeps holding its pool, which holds
	// the server), and their release during the no-slow run made its
	// growth negative (-40 MiB) and the slow run's ordinary growth look
	// like what stalled clients pinned.
	if os.Getenv(aloneEnv) != t.Name() {
		runAlone(t)
		return
	}
	// 1,000 subscribers without the race detector. Under it, on 2 cores,
	// one message to 1,000 sockets (and to the 900 in-process clients
	// reading it) takes 0.3 to 0.4 s, more while other packages' tests
	// run, so the two runs alone would take 10 to 20 s; 400 subscribers
	// keep the shape (10% stalled, the same queues and messages) in a few.
	subscribers, interval := 1000, 100*time.Millisecond
	// The p99 of a -race run swings by tens of percent from run to run on
	// a shared 2-core machine (measured ratios 0.6 to 1.0 with nothing
	// changed), so under race the bound is looser; the ratio is logged.
	maxRatio := 2.0
	if raceEnabled {
		subscribers, interval, maxRatio = 400, 200*time.Millisecond, 3.0
	}
	slowCount := subscribers / 10
	const (
		queueBytes = 16 << 10
		sndBuf     = 16 << 10 // the kernel doubles it
		dataBytes  = 8 << 10
		// messages per run: 12 x 8 KiB is 96 KiB per subscriber, about
		// twice what a stalled one holds (queue plus kernel buffers, ~52
		// KiB) after it stops, one message into the run; a fast one has
		// as much slack for a moment the loaded machine does not run it.
		messages, stopAt = 12, 1
		// slack covers what the slow run may allocate beyond the no-slow
		// run: the sampled peaks of two identical runs differ by up to
		// 4 MiB (requests, futures and frames in flight when the sample
		// is taken), twice that for safety.
		slack = 8 << 20
	)
	r := testutil.StartRelay(t,
		func(cfg *edge.Config) {
			// Smaller than the default, so that a stalled client fills its
			// buffers within a run of a few messages.
			cfg.SocketSendBufferBytes = sndBuf
			cfg.Actors.SendQueueBytes = queueBytes
			cfg.Actors.CloseTimeout = 200 * time.Millisecond
			// The history is full after the first run, so that it does not
			// grow during the second, which the heap bound measures.
			cfg.Actors.History.MaxMessages = messages
		})
	pub, sub := r.PublishToken(t), r.SubscribeToken(t)
	ch := testutil.Channel("crowded")
	begin := time.Now()

	fast := testutil.DialSubscribers(t, r.Addr, sub, subscribers-slowCount, func(int) string { return ch })
	slow := make([]*stoppableReader, slowCount)
	for i := range slow {
		c := r.DialStalled(t, sub)
		c.Send(`{"op":"sub","id":1,"ch":"` + ch + `"}`)
		slow[i] = startReader(c)
	}
	r.WaitMetric(t, "realtime_subscriptions", float64(subscribers))
	require.Eventually(t, func() bool {
		for _, s := range fast {
			if !s.State(ch).Acked {
				return false
			}
		}
		return true
	}, testutil.Wait, 10*time.Millisecond, "sub acks")

	var last uint64
	caughtUp := func(t *testing.T, name string) {
		t.Helper()
		behind := func() (n, closed int) {
			for _, s := range fast {
				if s.State(ch).Last < last {
					n++
					if s.CloseCode() != 0 {
						closed++
					}
				}
			}
			return n, closed
		}
		if !assert.Eventually(t, func() bool { n, _ := behind(); return n == 0 }, testutil.Wait, 10*time.Millisecond) {
			n, closed := behind()
			t.Fatalf("%s: %d fast subscribers did not get every message (%d of them closed), slow consumer cut-offs %v",
				name, n, closed, r.Metric(t, "realtime_slow_consumer_disconnects_total"))
		}
	}
	// run publishes messages at interval, calling midway once stopAt of
	// them are out, and waits until every fast subscriber has them all. It
	// returns their p99 latency and how far the heap grew above where it
	// was when the run began. Growth within a run, not a comparison of two
	// runs: relays of earlier tests in this process are still being freed
	// (fasthttp's idle workers keep theirs reachable for up to 10 s), which
	// moved a cross-run comparison by tens of MiB either way.
	run := func(name string, midway func()) (p99 time.Duration, heapGrowth int64) {
		startHeap := heapBytes()
		var peak atomic.Uint64
		stopSampling := make(chan struct{})
		var sampler sync.WaitGroup
		sampler.Go(func() {
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				peak.Store(max(peak.Load(), heapBytes()))
				select {
				case <-stopSampling:
					return
				case <-tick.C:
				}
			}
		})
		start := time.Now()
		tick := time.NewTicker(interval)
		for n := range messages {
			if n == stopAt && midway != nil {
				midway()
			}
			res, err := r.TryPublish(pub, testutil.Publication{Channel: ch, Event: "Tick", Data: testutil.Stamp(dataBytes)})
			require.NoError(t, err)
			require.Equal(t, last+1, res.Offset)
			last = res.Offset
			<-tick.C
		}
		tick.Stop()
		published := time.Since(start)
		caughtUp(t, name)
		close(stopSampling)
		sampler.Wait()
		var all []time.Duration
		for _, s := range fast {
			all = append(all, s.TakeLatencies()...)
		}
		require.Len(t, all, len(fast)*messages, "%s: latencies", name)
		p99 = percentile(all, 0.99)
		growth := int64(peak.Load()) - int64(startHeap)
		t.Logf("%s: %d messages in %v, p50 %v, p99 %v, max %v, heap %d MiB at start, peak %+d KiB", name, messages,
			published.Round(time.Millisecond), percentile(all, 0.5), p99, all[len(all)-1], startHeap>>20, growth>>10)
		return p99, growth
	}

	t.Logf("%d subscribers connected in %v", subscribers, time.Since(begin).Round(time.Millisecond))
	// A first message warms the path up (the channel's history, every
	// connection's writer and buffers) outside the measured runs.
	last = r.Publish(t, pub, ch, "Tick", testutil.Stamp(dataBytes))
	caughtUp(t, "warm-up")
	for _, s := range fast {
		s.TakeLatencies()
	}
	baseP99, baseGrowth := run("no-slow run", nil)
	slowP99, slowGrowth := run("slow run", func() {
		for _, s := range slow {
			s.Stop()
		}
	})

	// A stalled client that had not filled its buffers by the end of the
	// run gets a few more messages.
	for range 2 * messages {
		if r.Metric(t, "realtime_slow_consumer_disconnects_total") == float64(slowCount) {
			break
		}
		last = r.Publish(t, pub, ch, "Tick", testutil.Stamp(dataBytes))
	}
	r.WaitMetric(t, "realtime_slow_consumer_disconnects_total", float64(slowCount))
	r.WaitMetric(t, `realtime_connections_closed_total{reason="slow_consumer"}`, float64(slowCount))
	r.WaitMetric(t, "realtime_connections", float64(len(fast)))
	r.WaitMetric(t, "realtime_subscriptions", float64(len(fast)))
	for i, s := range fast {
		require.Empty(t, s.Failures(), "fast subscriber %d", i)
		st := s.State(ch)
		require.Equal(t, int(last), st.Msgs, "fast subscriber %d lost messages", i)
		require.Equal(t, last, st.Last, "fast subscriber %d", i)
		require.Zero(t, s.CloseCode(), "fast subscriber %d was closed", i)
	}

	// The same run without stalled clients is the baseline: both hold the
	// same messages in flight. What stalled clients may add is their
	// queues, and the batch that a writer stuck on one holds. (Frames are
	// shared by every queue, so an uncapped queue would show in the 4008
	// count above sooner than here; this catches per-connection copies
	// and state that a stalled connection pins.)
	bound := int64(slowCount*queueBytes + slack)
	extra := slowGrowth - max(baseGrowth, 0)
	t.Logf("heap growth: %+d KiB in the no-slow run, %+d KiB in the slow run, %+d KiB more (bound %d KiB)",
		baseGrowth>>10, slowGrowth>>10, extra>>10, bound>>10)
	assert.LessOrEqual(t, extra, bound)

	ratio := float64(slowP99) / float64(baseP99)
	t.Logf("p99: %v without slow consumers, %v with (ratio %.2f)", baseP99, slowP99, ratio)
	assert.LessOrEqual(t, ratio, maxRatio)
}

// aloneEnv names the test that a child process of runAlone runs.
const aloneEnv = "REALTIME_TEST_ALONE"

// runAlone runs the calling test in a new process of the test binary, with
// nothing else, and fails if it fails there. The child's output is logged.
func runAlone(t *testing.T) {
	t.Helper()
	bin, err := os.Executable()
	require.NoError(t, err)
	args := []string{"-test.run=^" + t.Name() + "$", "-test.count=1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		// Before the parent's, so that the child's timeout (and its
		// goroutine dump) is what reports a hang.
		args = append(args, "-test.timeout="+(time.Until(d)*9/10).String())
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), aloneEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("%s, alone in a process:\n%s", t.Name(), out)
	require.NoError(t, err, "%s failed alone in a process", t.Name())
	require.Contains(t, string(out), "--- PASS: "+t.Name()+" ", "the child did not run the test")
}
