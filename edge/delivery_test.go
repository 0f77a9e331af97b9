package edge_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// After the ack of an unsub, no message of that channel follows, even with
// publishes in flight: the channel itself queues the ack, behind the last
// message it queued for the subscriber.
func TestNoMessageAfterUnsubAck(t *testing.T) {
	r := testutil.StartRelay(t)
	c := r.Dial(t, r.SubscribeToken(t))
	busy, marker := testutil.Channel("busy"), testutil.Channel("marker")
	c.Subscribe(1, busy)
	c.Subscribe(2, marker)

	pub := r.PublishToken(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 0; n < 10_000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := r.TryPublish(pub, testutil.Publication{Channel: busy, Event: "e", Data: "x"}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	defer wg.Wait()
	defer close(stop)

	require.Equal(t, busy, c.NextOp("msg").Ch, "the busy channel is live")
	c.Send(`{"op":"unsub","id":3,"ch":"` + busy + `"}`)
	for {
		f := c.Next()
		if f.Op == "ack" {
			require.NotNil(t, f.ID)
			require.Equal(t, uint64(3), *f.ID)
			break
		}
		require.Equal(t, "msg", f.Op)
		require.Equal(t, busy, f.Ch)
	}
	// The publisher is still going; the marker bounds the wait.
	r.Publish(t, pub, marker, "marker", "m")
	for {
		f := c.Next()
		require.Equal(t, "msg", f.Op)
		require.Equal(t, marker, f.Ch, "a message of %s after its unsub ack", busy)
		if f.Event == "marker" {
			return
		}
	}
}

// A client's ping is answered even when the connection has been quiet for
// longer than the write timeout (whose deadline lapsed long ago), and the
// connection keeps working.
func TestPongAfterQuietLongerThanWriteTimeout(t *testing.T) {
	const writeTimeout = 100 * time.Millisecond
	r := testutil.StartRelay(t, func(c *edge.Config) { c.SocketWriteTimeout = writeTimeout })
	c := r.Dial(t, r.SubscribeToken(t))
	ch := testutil.Channel("quiet")
	c.Subscribe(1, ch) // a write, which set a deadline
	time.Sleep(3 * writeTimeout)
	require.NoError(t, c.Raw().WritePing([]byte("hi")))
	require.Eventually(t, func() bool { return c.Pongs() == 1 }, testutil.Wait, time.Millisecond)
	r.Publish(t, r.PublishToken(t), ch, "e", "still open")
	assert.Equal(t, "still open", c.NextOp("msg").Data)
}

// A client's ping is answered with a pong that echoes its payload, an empty
// one and one of the largest (125 bytes) included.
func TestClientPingsAnswered(t *testing.T) {
	r := testutil.StartRelay(t)
	c := r.DialRawConn(t, r.SubscribeToken(t), 0)
	for _, payload := range []string{"", "hello", strings.Repeat("x", 125)} {
		c.WriteFrame(0x9, []byte(payload))
		requirePong(t, c, payload)
	}
}

// A subscriber that reads slowly, but keeps up within its queue, gets every
// message intact and in order, although most writes to it cannot complete
// at once (a kernel send buffer of a few KiB) and finish on a writer
// goroutine.
func TestSlowReaderGetsEverything(t *testing.T) {
	r := testutil.StartRelay(t, func(c *edge.Config) {
		c.SocketSendBufferBytes = 16 << 10
		c.Actors.SendQueueBytes = 64 << 20
	})
	// Not read until every message is published: 1.3 MiB, far more than
	// the kernel buffers hold.
	stalled := r.DialRawConn(t, r.SubscribeToken(t), 0)
	ch := testutil.Channel("slow")
	stalled.Send(`{"op":"sub","id":1,"ch":"` + ch + `"}`)
	c := r.Dial(t, r.SubscribeToken(t))
	c.Subscribe(1, ch)
	// Two connections' subscribes are not ordered: the stalled one's may
	// reach the channel after the first publish (its ack then says offset
	// 1 and message 1 never comes).
	r.WaitMetric(t, "realtime_subscriptions", 2)

	pub := r.PublishToken(t)
	requireSlowReaderGetsEverything(t, func(data string) { r.Publish(t, pub, ch, "e", data) }, c, stalled)
	assert.Positive(t, r.Metric(t, "realtime_socket_writes_blocked_total"), "no write had to wait: the test proves nothing")
}

// Messages still go out after a ping whose write deadline has lapsed: a
// relay that checked that deadline on its non-blocking writes dropped
// every connection at its first message more than the write timeout after
// a ping.
func TestMessageAfterPingDeadlineLapsed(t *testing.T) {
	const writeTimeout = 20 * time.Millisecond
	r := testutil.StartRelay(t, func(c *edge.Config) {
		c.SocketWriteTimeout = writeTimeout
		c.PingInterval = 300 * time.Millisecond
	})
	c := r.Dial(t, r.SubscribeToken(t))
	ch := testutil.Channel("after-ping")
	c.Subscribe(1, ch)
	pub := r.PublishToken(t)
	for i := range 3 {
		pings := c.Pings()
		require.Eventually(t, func() bool { return c.Pings() > pings }, testutil.Wait, time.Millisecond)
		time.Sleep(3 * writeTimeout) // the ping's deadline lapses; the next ping is far off
		data := "after ping " + string(rune('a'+i))
		r.Publish(t, pub, ch, "e", data)
		assert.Equal(t, data, c.NextOp("msg").Data)
	}
	assert.Zero(t, r.Metric(t, `realtime_connections_closed_total{reason="write_error"}`))
}

// A write that times out closes the connection, socket included: a client
// that stops reading but keeps the TCP connection up is not kept forever
// (its keepalive would not end it while it keeps sending).
func TestWriteTimeoutClosesTheSocket(t *testing.T) {
	r := testutil.StartRelay(t, func(c *edge.Config) {
		c.SocketWriteTimeout = 100 * time.Millisecond
		c.SocketSendBufferBytes = 16 << 10
		c.Actors.SendQueueBytes = 64 << 20 // the timeout, not the queue bound, ends it
	})
	stalled := r.DialStalled(t, r.SubscribeToken(t))
	ch := testutil.Channel("timeout")
	stalled.Send(`{"op":"sub","id":1,"ch":"` + ch + `"}`)
	r.WaitMetric(t, "realtime_subscriptions", 1)
	pub := r.PublishToken(t)
	// How much the kernels take before writes stop for good varies
	// (loopback is lenient with a receive buffer shrunk after connecting):
	// publish until the write timeout has closed the connection, at most
	// 16 MiB; then nothing more is queued for it.
	const writeErrors = `realtime_connections_closed_total{reason="write_error"}`
	for i := 0; r.Metric(t, writeErrors) == 0; i++ {
		require.Less(t, i, 512, "no write timed out")
		r.Publish(t, pub, ch, "e", testutil.Stamp(32<<10))
	}
	assert.InDelta(t, 1, r.Metric(t, writeErrors), 0)
	r.WaitMetric(t, "realtime_connections", 0)
	assert.Zero(t, r.Metric(t, "realtime_slow_consumer_disconnects_total"))
}

// TestBatchIsOneFramePerConnection: a batch publish to several channels of
// one connection (a dashboard's gadgets) reaches it in one frame, one
// write, instead of one per channel; a connection subscribed to part of
// them gets its part in one frame too.
func TestBatchIsOneFramePerConnection(t *testing.T) {
	// Only the last answer writes: under -race on a loaded machine, the
	// ten channels can take longer than the default 2 ms hold to answer.
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.Actors.BatchHold = testutil.Wait })
	token := r.SubscribeToken(t)
	const gadgets = 10
	channel := func(g int) string { return testutil.Channel("dash-g" + strconv.Itoa(g)) }
	all, half := r.DialRawConn(t, token, 0), r.DialRawConn(t, token, 0)
	for g := range gadgets {
		all.Send(`{"op":"sub","id":` + strconv.Itoa(g+1) + `,"ch":"` + channel(g) + `"}`)
		if g%2 == 0 {
			half.Send(`{"op":"sub","id":` + strconv.Itoa(g+1) + `,"ch":"` + channel(g) + `"}`)
		}
	}
	all.ReadMessages(t, gadgets)    // the acks
	half.ReadMessages(t, gadgets/2) // the acks

	code, resp := r.Post(t, "/v1/publish/batch", r.PublishToken(t), batchOf(gadgets, channel, "x"))
	require.Equal(t, 200, code, resp)

	for _, c := range []struct {
		conn *testutil.RawConn
		want int
	}{{all, gadgets}, {half, gadgets / 2}} {
		msgs := c.conn.ReadFrame(t)
		require.Len(t, msgs, c.want, "one frame carries every message of the batch for this connection")
		seen := map[string]bool{}
		for _, m := range msgs {
			assert.Equal(t, "msg", m.Op)
			seen[m.Ch] = true
		}
		assert.Len(t, seen, c.want, "one message per channel")
	}
}

// TestBatchLargerThanTheQueue: a batch whose messages for one viewer add
// up to more than the outbound queue's bound reaches a viewer who keeps
// up: what the server holds back (here the batch, until its last channel
// answers) is not the client's backlog, and is written first rather than
// cut off with 4008.
func TestBatchLargerThanTheQueue(t *testing.T) {
	const queue = 32 << 10
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.Actors.SendQueueBytes = queue
		cfg.Actors.BatchHold = testutil.Wait // held until the last answer
	})
	const gadgets = 10
	channel := func(g int) string { return testutil.Channel("big-g" + strconv.Itoa(g)) }
	viewer := r.DialRawConn(t, r.SubscribeToken(t), 0)
	for g := range gadgets {
		viewer.Send(`{"op":"sub","id":` + strconv.Itoa(g+1) + `,"ch":"` + channel(g) + `"}`)
	}
	viewer.ReadMessages(t, gadgets) // the acks

	data := strings.Repeat("d", queue/4) // the batch is 2.5 times the queue
	code, resp := r.Post(t, "/v1/publish/batch", r.PublishToken(t), batchOf(gadgets, channel, data))
	require.Equal(t, 200, code, resp)

	msgs := viewer.ReadMessages(t, gadgets)
	require.Len(t, msgs, gadgets)
	for _, m := range msgs {
		require.Equal(t, "msg", m.Op)
		assert.Equal(t, data, m.Data)
	}
	assert.InDelta(t, 0, r.Metric(t, "realtime_slow_consumer_disconnects_total"), 0)
}

// batchOf returns the body of a batch publish of one "update" with data to
// each of channel(0) .. channel(n-1).
func batchOf(n int, channel func(int) string, data string) string {
	var body strings.Builder
	body.WriteString(`{"messages":[`)
	for g := range n {
		if g > 0 {
			body.WriteByte(',')
		}
		body.WriteString(`{"channel":"` + channel(g) + `","event":"update","data":"` + data + `"}`)
	}
	body.WriteString(`]}`)
	return body.String()
}
