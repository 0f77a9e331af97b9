package edge_test

import (
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// Every connection has a read goroutine, parked in gws's read loop. Its
// stack starts at 2 KiB; anything that grows it on the way to a frame
// handler (a pong, a ping, a subscribe) costs 2 KiB more for as long as the
// connection lives, since Go shrinks a stack only when less than a quarter
// of it is in use, and the read loop parks deeper than that. So neither
// may grow it. Measured over raw clients, which have no goroutines of their
// own: every stack of the process summed before the connections and after.
func TestReadGoroutinesKeepTheirFirstStack(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector doubles every stack's guard, so every read goroutine grows")
	}
	const conns = 400
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.Actors.MaxSubscriptions = 1 })
	tok := r.SubscribeToken(t)
	before := stackInUse()
	clients := make([]*testutil.RawConn, conns)
	for i := range clients {
		clients[i] = r.DialRawConn(t, tok, 0)
	}
	for i, c := range clients {
		c.WriteFrame(0xA, nil) // a pong
		c.WriteFrame(0x9, []byte("p"+strconv.Itoa(i)))
		requirePong(t, c, "p"+strconv.Itoa(i))
		c.Send(`{"op":"sub","id":1,"ch":"` + testutil.Channel("g"+strconv.Itoa(i%10)) + `"}`)
		require.Equal(t, "ack", c.ReadMessages(t, 1)[0].Op)
	}
	r.WaitMetric(t, "realtime_subscriptions", conns)
	perConn := (stackInUse() - before) / conns
	// 2 KiB each, and 4 KiB once grown.
	assert.Less(t, perConn, 3<<10, "%d bytes of stack per connection", perConn)
}

// stackInUse is the bytes of every goroutine stack, after a collection,
// which frees the stacks of goroutines that ended and shrinks the others
// where it can.
func stackInUse() int {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int(ms.StackInuse)
}
