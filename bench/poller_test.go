//go:build linux

package bench

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/sockettest"
)

// polledSub returns a subscriber without a channel on a fresh loopback
// connection, and the server's end.
func polledSub(t *testing.T, n int, closing *atomic.Bool, ctr *counters) (*subscriber, func() []byte) {
	server, client := sockettest.Pair(t)
	rc, err := client.SyscallConn()
	require.NoError(t, err)
	s := &subscriber{conn: &wsConn{nc: client, rc: rc}, n: n, channel: -1, ctr: ctr, closing: closing,
		acked: make(chan struct{}), done: make(chan struct{}), polled: true}
	s.group = []*subscriber{s}
	read := func() []byte {
		buf := make([]byte, 64)
		require.NoError(t, server.SetReadDeadline(time.Now().Add(10*time.Second)))
		k, _ := server.Read(buf)
		return buf[:k]
	}
	return s, read
}

func requireEnded(t *testing.T, s *subscriber) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the poller never ended the subscriber")
	}
}

// TestPollerEnds: the run ends a polled subscriber by shutting its socket
// down (a close frame goes out, nothing is counted as an error); a poller
// whose epoll instance fails ends every subscriber it holds, and the ones
// handed to it afterwards, so that nobody waits for them.
func TestPollerEnds(t *testing.T) {
	ps := newPollers()
	require.NotNil(t, ps)
	var closing atomic.Bool
	var ctr counters

	s, serverRead := polledSub(t, 1, &closing, &ctr)
	ps.add(s)
	closing.Store(true)
	s.conn.shutdown()
	requireEnded(t, s)
	assert.Equal(t, []byte{0x88, 0x82}, serverRead()[:2], "a masked close frame first")
	assert.NoError(t, s.readErr)
	closing.Store(false)

	// Break every poller's epoll instance under the subscribers it holds.
	held := make([]*subscriber, len(ps.ps))
	for i := range held {
		held[i], _ = polledSub(t, 10+i, &closing, &ctr)
		ps.add(held[i])
	}
	ps.stop()
	for _, h := range held {
		requireEnded(t, h)
		assert.Error(t, h.readErr)
	}
	late, _ := polledSub(t, 99, &closing, &ctr)
	ps.add(late)
	requireEnded(t, late)
	assert.Error(t, late.readErr, "a failed poller takes no subscriber")
	assert.Equal(t, int64(len(held)+1), ctr.readErrors.Load())
}
