package edge_test

import (
	"encoding/binary"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/protocol"
	"github.com/realtime-relay/realtime/internal/testutil"
	"github.com/realtime-relay/realtime/internal/wsframe"
)

// This file holds the abuse tests of the WebSocket surface: frames the
// protocol forbids, request floods, hostile channel names, and memory under
// a client or a publisher that tries to exhaust it.

// collect reads n frames from c and returns them by id, requiring each to
// carry a distinct id.
func collect(t *testing.T, c *testutil.Client, n int) map[uint64]protocol.ServerFrame {
	t.Helper()
	byID := make(map[uint64]protocol.ServerFrame, n)
	for range n {
		f := c.Next()
		require.NotNil(t, f.ID, "frame without id: %+v", f)
		_, dup := byID[*f.ID]
		require.False(t, dup, "two answers to id %d", *f.ID)
		byID[*f.ID] = f
	}
	return byID
}

// TestInvalidUTF8Closes1007 sends a text frame that is not UTF-8: the relay
// closes that connection with 1007 (RFC 6455 invalid payload data), counts
// it as a protocol error, and nobody else notices.
func TestInvalidUTF8Closes1007(t *testing.T) {
	r := testutil.StartRelay(t)
	ch := testutil.Channel("g")
	bystander := r.Dial(t, r.SubscribeToken(t))
	bystander.Subscribe(1, ch)
	for _, payload := range [][]byte{
		{0xff, 0xfe},
		[]byte(`{"op":"sub","id":1,"ch":"` + testutil.Channel("\xc3\x28") + `"}`), // broken 2-byte sequence
		[]byte("{\"op\":\"sub\",\"ch\":\"\xed\xa0\x80\"}"),                        // UTF-16 surrogate
		[]byte("{\"op\":\"sub\",\"ch\":\"\xc0\xaf\"}"),                            // overlong '/'
	} {
		c := r.Dial(t, r.SubscribeToken(t))
		c.Subscribe(1, ch)
		// The test client does not check UTF-8 on write, so this goes out as is.
		require.NoError(t, c.Raw().WriteMessage(gws.OpcodeText, payload))
		assert.Equal(t, uint16(1007), c.WaitClosed(), "payload %q", payload)
	}
	r.WaitMetric(t, `realtime_connections_closed_total{reason="protocol"}`, 4)
	r.WaitMetric(t, "realtime_subscriptions", 1)
	requireLive(t, r, r.PublishToken(t), ch, bystander)
}

// TestSubscribeFlood floods sub and unsub requests past the per-connection
// rate: the excess is answered err limit, the connection stays usable, the
// bucket refills with the relay's clock, and other connections keep their
// own budget.
func TestSubscribeFlood(t *testing.T) {
	const rate, burst = 2, 10
	clock := testutil.NewClock()
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.Now = clock.Now
		cfg.Actors.SubscribeRate, cfg.Actors.SubscribeBurst = rate, burst
	})
	sub := r.SubscribeToken(t)
	bystander := r.Dial(t, sub)
	flooder := r.Dial(t, sub)
	gadget := func(i int) string { return testutil.Channel("g" + u(uint64(i))) }

	const subs = 3 * burst
	for i := 1; i <= subs; i++ {
		flooder.Send(`{"op":"sub","id":` + u(uint64(i)) + `,"ch":"` + gadget(i) + `"}`)
	}
	got := collect(t, flooder, subs)
	for i := uint64(1); i <= subs; i++ {
		if i <= burst {
			assert.Equal(t, "ack", got[i].Op, "sub %d within the burst", i)
		} else {
			assert.Equal(t, "err", got[i].Op, "sub %d past the burst", i)
			assert.Equal(t, "limit", got[i].Code)
		}
	}
	// Unsubscribing spends the same budget.
	for i := 1; i <= burst; i++ {
		flooder.Send(`{"op":"unsub","id":` + u(uint64(100+i)) + `,"ch":"` + gadget(i) + `"}`)
	}
	for id, f := range collect(t, flooder, burst) {
		assert.Equal(t, "err", f.Op, "unsub %d with an empty bucket", id)
		assert.Equal(t, "limit", f.Code)
	}
	// A long flood is answered, not queued up or crashed on.
	const flood = 1000
	var b strings.Builder
	for i := range flood {
		b.Reset()
		b.WriteString(`{"op":"sub","id":` + u(uint64(1000+i)) + `,"ch":"` + gadget(1000+i) + `"}`)
		flooder.Send(b.String())
	}
	for _, f := range collect(t, flooder, flood) {
		assert.Equal(t, "limit", f.Code)
	}
	r.WaitMetric(t, "realtime_subscriptions", burst)

	// The other connection has its own bucket.
	bystander.Subscribe(1, gadget(1))

	// Half a bucket later, exactly that many requests pass again.
	clock.Advance(time.Second * burst / 2 / rate)
	for i := 1; i <= burst; i++ {
		flooder.Send(`{"op":"unsub","id":` + u(uint64(200+i)) + `,"ch":"` + gadget(i) + `"}`)
	}
	got = collect(t, flooder, burst)
	for i := uint64(1); i <= burst; i++ {
		if i <= burst/2 {
			assert.Equal(t, "ack", got[200+i].Op, "unsub %d after the refill", i)
		} else {
			assert.Equal(t, "limit", got[200+i].Code, "unsub %d past the refill", i)
		}
	}
	r.WaitMetric(t, "realtime_subscriptions", burst-burst/2+1)
	assert.InDelta(t, 2, r.Metric(t, "realtime_connections"), 0)
	// gadget(1) was unsubscribed by the flooder, not by the bystander.
	requireLive(t, r, r.PublishToken(t), gadget(1), bystander)
}

// TestFrameFloodCloses: a client that sends frames faster than its
// connection's actor handles them is closed with 1008 once more than 16 x
// MaxFrameBytes wait for the actor, instead of having them queued without
// end (all 2,000 frames, 125 MiB, before the bound); other clients go on.
func TestFrameFloodCloses(t *testing.T) {
	const maxFrame = 64 << 10
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.MaxFrameBytes = maxFrame })
	sub := r.SubscribeToken(t)
	bystander := r.Dial(t, sub)
	ch := testutil.Channel("g")
	bystander.Subscribe(1, ch)

	flooder := r.DialRawConn(t, sub, 0)
	// Frames the actor must decode, of nearly maxFrame each: unsubscribes
	// of a channel the connection does not hold.
	frame := wsframe.AppendMasked(nil, 0x1,
		[]byte(`{"op":"unsub","id":1,"ch":"`+testutil.Channel(strings.Repeat("a", maxFrame-200))+`"}`))
	const most = 2000 // 125 MiB, which the relay would queue whole without the bound
	wrote := make(chan int, 1)
	go func() {
		n := 0
		for ; n < most; n++ {
			if _, err := flooder.Write(frame); err != nil {
				break
			}
		}
		wrote <- n
	}()
	closing := nextFrameOf(t, flooder, 0x8)
	require.GreaterOrEqual(t, len(closing), 2)
	assert.Equal(t, uint16(actors.ClosePolicy), binary.BigEndian.Uint16(closing))
	assert.Less(t, <-wrote, most, "the flooder was never cut off")
	r.WaitMetric(t, `realtime_connections_closed_total{reason="flood"}`, 1)
	r.WaitMetric(t, "realtime_connections", 1)
	requireLive(t, r, r.PublishToken(t), ch, bystander)
}

// TestHostileChannelNames subscribes (and unsubscribes) channels that are
// empty, too long or carry control characters: each is answered err
// bad_request with the request's id, creates no channel, and leaves the
// connection and its neighbours working.
func TestHostileChannelNames(t *testing.T) {
	r := testutil.StartRelay(t)
	bystander := r.Dial(t, r.SubscribeToken(t))
	ch := testutil.Channel("g")
	bystander.Subscribe(1, ch)
	c := r.Dial(t, r.SubscribeToken(t))
	ns := testutil.Site + "/" + testutil.Dash + "/"
	names := map[string]string{
		"empty":                      "",
		"namespace only":             ns,
		"gadget of 129 bytes":        ns + strings.Repeat("g", 129),
		"gadget of 60 KiB":           ns + strings.Repeat("g", 60<<10),
		"NUL":                        ns + "g\x00",
		"newline":                    ns + "g\nforged log line",
		"carriage return":            ns + "g\r",
		"tab":                        ns + "\tg",
		"escape sequence":            ns + "\x1b[31mg",
		"DEL":                        ns + "g\x7f",
		"C1 control":                 ns + "g\u0085",
		"line separator":             ns + "g\u2028",
		"right-to-left override":     ns + "\u202eg",
		"non-ASCII letter":           ns + "gé",
		"space":                      ns + "g g",
		"deeper path":                ns + "g/h",
		"dot segments":               ns + "../g",
		"trailing slash":             ns + "g/",
		"percent-encoded":            ns + "g%2Fh",
		"empty gadget, double slash": testutil.Site + "/" + testutil.Dash + "//g",
	}
	id := uint64(10)
	for name, channel := range names {
		t.Run(name, func(t *testing.T) {
			for _, op := range []string{"sub", "unsub"} {
				id++
				c.Send(`{"op":"` + op + `","id":` + u(id) + `,"ch":` + quoteJSON(channel) + `}`)
				f := c.NextOp("err")
				require.NotNil(t, f.ID)
				assert.Equal(t, id, *f.ID)
				assert.Equal(t, "bad_request", f.Code, "%s %q", op, channel)
			}
		})
	}
	assert.InDelta(t, 1, r.Metric(t, "realtime_channels"), 0)
	assert.InDelta(t, 0, r.Metric(t, "realtime_namespace_denied_total"), 0)
	// Both connections still work.
	c.Subscribe(1, ch)
	requireLive(t, r, r.PublishToken(t), ch, bystander, c)
}

// publishBatches publishes n messages of data to ch through the batch
// endpoint, 100 (the default MaxBatch) at a time.
func publishBatches(t *testing.T, r *testutil.Relay, token, ch, data string, n int) {
	t.Helper()
	for n > 0 {
		k := min(n, 100)
		n -= k
		var body strings.Builder
		body.WriteString(`{"messages":[`)
		for i := range k {
			if i > 0 {
				body.WriteByte(',')
			}
			body.WriteString(`{"channel":` + quoteJSON(ch) + `,"event":"Tick","data":` + quoteJSON(data) + `}`)
		}
		body.WriteString(`]}`)
		status, resp := r.Post(t, "/v1/publish/batch", token, body.String())
		require.Equal(t, 200, status, resp)
		require.NotContains(t, resp, `"error"`)
	}
}

// heapBytes returns the live heap after a full collection (twice, so that
// sync.Pool victims go too).
func heapBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMemoryBoundedUnderAbuse has clients open every subscription they may
// on distinct channels, and a publisher flood one channel whose subscriber
// never reads: the relay's heap grows by no more than what its caps allow.
func TestMemoryBoundedUnderAbuse(t *testing.T) {
	const (
		abusers          = 3
		maxSubscriptions = 100
		historyBytes     = 64 << 10
		queueBytes       = 256 << 10
		// Few large messages: every publish also costs a protoactor future,
		// whose registry (1024x32 lazily allocated Go maps) grows by a few
		// hundred bytes per new map touched, up to ~9 MiB once warm.
		dataBytes = 8 << 10
		messages  = 2500 // 20 MiB of data in all
		// perSubscription is the budget of one channel actor with one
		// subscriber and nothing retained, and the connection's entry for it.
		perSubscription = 8 << 10
		// slack covers the runtime, pools and the test's own clients.
		slack = 4 << 20
	)
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.Actors.MaxSubscriptions = maxSubscriptions
		cfg.Actors.History.MaxBytes = historyBytes
		// So high that only the byte cap can bound the flooded history.
		cfg.Actors.History.MaxMessages = 2 * messages
		cfg.Actors.SendQueueBytes = queueBytes
	})
	sub, pub := r.SubscribeToken(t), r.PublishToken(t)
	clients := make([]*testutil.Client, abusers)
	for a := range clients {
		clients[a] = r.Dial(t, sub)
	}
	base := heapBytes()

	for a, c := range clients {
		for i := range maxSubscriptions {
			c.Send(`{"op":"sub","id":` + u(uint64(i)) + `,"ch":"` + testutil.Channel("a"+u(uint64(a))+"-"+u(uint64(i))) + `"}`)
		}
		for id, f := range collect(t, c, maxSubscriptions) {
			require.Equal(t, "ack", f.Op, "sub %d", id)
		}
		c.Send(`{"op":"sub","id":1000,"ch":"` + testutil.Channel("one-too-many") + `"}`)
		assert.Equal(t, "limit", c.NextOp("err").Code)
	}
	r.WaitMetric(t, "realtime_channels", abusers*maxSubscriptions)
	subscribed := heapBytes()
	t.Logf("heap: %d KiB at start, +%d KiB for %d subscriptions", base>>10, (int64(subscribed)-int64(base))>>10, abusers*maxSubscriptions)
	assert.LessOrEqual(t, int64(subscribed)-int64(base), int64(abusers*maxSubscriptions*perSubscription+slack/4))

	flood := testutil.Channel("flood")
	stalled := r.DialStalled(t, sub)
	stalled.Send(`{"op":"sub","id":1,"ch":"` + flood + `"}`)
	r.WaitMetric(t, "realtime_subscriptions", abusers*maxSubscriptions+1)
	publishBatches(t, r, pub, flood, strings.Repeat("d", dataBytes), messages)
	flooded := heapBytes()
	// The flood may grow the heap by one channel's history and one
	// connection's outbound queue, nothing proportional to what was sent.
	bound := int64(historyBytes + queueBytes + slack)
	t.Logf("heap: +%d KiB after %d MiB published into one channel (bound %d KiB)",
		(int64(flooded)-int64(subscribed))>>10, messages*dataBytes>>20, bound>>10)
	assert.LessOrEqual(t, int64(flooded)-int64(subscribed), bound)
	assert.InDelta(t, messages, r.Metric(t, `realtime_publishes_total{result="ok"}`), 0)
}

// TestHistoryCaps checks that a channel retains at most MaxMessages messages
// and MaxBytes bytes of frames: exactly the newest that fit are recovered,
// and asking for one more is answered recovered:false.
func TestHistoryCaps(t *testing.T) {
	const maxMessages, maxBytes = 50, 16 << 10
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.Actors.History.MaxMessages = maxMessages
		cfg.Actors.History.MaxBytes = maxBytes
	})
	sub, pub := r.SubscribeToken(t), r.PublishToken(t)
	cases := []struct {
		name string
		data string
		n    int
	}{
		{"message cap", "small", 3 * maxMessages},
		{"byte cap", strings.Repeat("b", 1000), maxMessages},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := testutil.Channel(strings.ReplaceAll(tc.name, " ", "-"))
			publishBatches(t, r, pub, ch, tc.data, tc.n)
			latest := uint64(tc.n)

			// What the caps keep: the newest frames within both.
			kept, size := 0, 0
			for off := latest; off > 0 && kept < maxMessages; off-- {
				n := len(protocol.AppendMsg(nil, ch, "Tick", tc.data, off))
				if size+n > maxBytes {
					break
				}
				kept, size = kept+1, size+n
			}
			require.Less(t, kept, tc.n, "the case must overflow a cap")

			c := r.Dial(t, sub)
			epoch := c.Subscribe(1, ch).Epoch
			c.Send(`{"op":"unsub","id":2,"ch":"` + ch + `"}`)
			c.NextOp("ack")
			ack := c.SubscribeSince(3, ch, epoch, latest-uint64(kept))
			require.True(t, *ack.Recovered, "the newest %d messages must be retained", kept)
			requireMsgs(t, c, ch, latest-uint64(kept)+1, latest)
			c.Send(`{"op":"unsub","id":4,"ch":"` + ch + `"}`)
			c.NextOp("ack")
			ack = c.SubscribeSince(5, ch, epoch, latest-uint64(kept)-1)
			assert.False(t, *ack.Recovered, "%d messages retained, more than the caps allow", kept+1)
			requireLive(t, r, pub, ch, c)
		})
	}
}
