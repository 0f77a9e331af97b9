package edge

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The wheel checks each connection once its check is due, within a slot,
// never before while it is within the wheel's reach; a check due further
// ahead is put back until it is due; a connection taken out is never
// checked, and taking one out of a shared slot keeps the others.
func TestWheelChecksEachConnectionWhenDue(t *testing.T) {
	const ms = int64(time.Millisecond)
	w := newWheel(&Config{PingInterval: time.Second, KeepaliveTimeout: 2 * time.Second}, 0)
	require.Equal(t, 100*ms, w.width)
	reach := int64(len(w.slots)-1) * w.width
	dues := []int64{0, 50 * ms, 100 * ms, 250 * ms, 260 * ms, 270 * ms, 999 * ms, reach, 5000 * ms, 9050 * ms}
	conns := make([]*wsConn, len(dues))
	due := map[*wsConn]int64{}
	for i, d := range dues {
		conns[i] = &wsConn{}
		due[conns[i]] = d
		w.add(conns[i], d)
	}
	removed := conns[3] // shares its slot with the next two
	w.remove(removed)
	assert.Equal(t, -1, removed.slot)

	checked := map[*wsConn]int64{}
	for now := int64(0); now <= 10000*ms; now += w.width / 3 {
		w.run(now, func(c *wsConn, now int64) (int64, bool) {
			if now < due[c] {
				assert.Greater(t, due[c], reach, "checked at %d, before its due %d", now, due[c])
				return due[c], true
			}
			checked[c] = now
			return 0, false
		})
	}
	for _, c := range conns {
		at, ok := checked[c] // (Contains would compare the pointees)
		if c == removed {
			assert.False(t, ok, "checked after it was taken out")
			continue
		}
		require.True(t, ok, "due at %d, never checked", due[c])
		assert.GreaterOrEqual(t, at, due[c])
		assert.Less(t, at-due[c], 2*w.width, "due at %d, checked at %d", due[c], at)
	}
	for i, s := range w.slots {
		assert.Empty(t, s, "slot %d", i)
	}
}
