package edge_test

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
	"github.com/realtime-relay/realtime/internal/wsframe"
)

// clocked makes a relay read time from clock, with the given retention.
func clocked(clock *testutil.Clock, retention time.Duration) func(*edge.Config) {
	return func(cfg *edge.Config) {
		cfg.Now = clock.Now
		cfg.Actors.History.Retention = retention
	}
}

// publishN publishes n messages to ch and returns the epoch and the last
// offset.
func publishN(t *testing.T, r *testutil.Relay, token, ch string, n int) (string, uint64) {
	t.Helper()
	var res testutil.Published
	for range n {
		res = r.PublishOne(t, token, testutil.Publication{Channel: ch, Event: "Tick", Data: "m?"})
	}
	return res.Epoch, res.Offset
}

// requireMsgs requires that the next frames of c are the messages of ch
// with offsets from..to, in order.
func requireMsgs(t *testing.T, c *testutil.Client, ch string, from, to uint64) {
	t.Helper()
	for want := from; want <= to; want++ {
		f := c.NextOp("msg")
		require.Equal(t, ch, f.Ch)
		require.Equal(t, want, f.Offset, "offsets must follow each other with no gap or duplicate")
	}
}

// requireLive publishes a message and requires it to be the next frame of
// every client: whatever a client got before it has been checked, and
// nothing else is pending. It returns the message's offset.
func requireLive(t *testing.T, r *testutil.Relay, token, ch string, clients ...*testutil.Client) uint64 {
	t.Helper()
	off := r.Publish(t, token, ch, "Live", "live")
	for _, c := range clients {
		f := c.NextOp("msg")
		assert.Equal(t, ch, f.Ch)
		assert.Equal(t, off, f.Offset)
		assert.Equal(t, "live", f.Data)
	}
	return off
}

// u formats n, for ids and names in frames.
func u(n uint64) string { return strconv.FormatUint(n, 10) }

// assertNotTimeout checks that a read ended because the peer closed the
// connection, not because the test's deadline passed.
func assertNotTimeout(t *testing.T, err error) {
	t.Helper()
	var ne net.Error
	if errors.As(err, &ne) {
		assert.False(t, ne.Timeout(), "the server did not close the connection: %v", err)
	}
}

// requireSlowReaderGetsEverything publishes 40 messages of 32 KiB with
// publish, 1.3 MiB in all, far more than the kernel buffers of a client
// that does not read hold. live must get each at once; stalled, subscribed
// but read only now, must then get its ack and every message, whole and in
// order.
func requireSlowReaderGetsEverything(t *testing.T, publish func(data string), live *testutil.Client, stalled *testutil.RawConn) {
	t.Helper()
	const n = 40
	data := make([]string, n)
	for i := range data {
		data[i] = testutil.Stamp(32 << 10)
		publish(data[i])
	}
	for i := range n {
		require.Equal(t, data[i], live.NextOp("msg").Data) // the fast one is unaffected
	}
	msgs := stalled.ReadMessages(t, n+1) // the ack, then every message
	require.Equal(t, "ack", msgs[0].Op)
	for i := range n {
		require.Equal(t, uint64(i+1), msgs[i+1].Offset)
		require.Equal(t, data[i], msgs[i+1].Data)
	}
}

// requirePong reads c's frames up to the pong, which must echo payload
// (the relay's own pings may come first).
func requirePong(t *testing.T, c *testutil.RawConn, payload string) {
	t.Helper()
	require.Equal(t, payload, string(nextFrameOf(t, c, 0xA)))
}

// nextFrameOf reads c's frames up to the first with opcode, and returns its
// payload. It fails the test after Wait.
func nextFrameOf(t *testing.T, c *testutil.RawConn, opcode byte) []byte {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(testutil.Wait)))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for {
		op, payload, err := wsframe.ReadServerFrame(c.Conn)
		require.NoError(t, err, "waiting for a frame of opcode %#x", opcode)
		if op == opcode {
			return payload
		}
	}
}
