package actors

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func frameOf(offset uint64) []byte { return []byte("m" + strconv.FormatUint(offset, 10)) }

func appendN(t *testing.T, h History, now time.Time, n int) {
	t.Helper()
	for range n {
		_, _, dup, err := h.Append(now, "", frameOf)
		require.NoError(t, err)
		require.False(t, dup)
	}
}

func TestHistorySince(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	h := newMemoryHistory(HistoryLimits{Retention: 2 * time.Minute, MaxMessages: 5, MaxBytes: 1 << 20, MaxKeys: 10})
	assert.Equal(t, uint64(0), h.Latest())
	frames, ok, err := h.Since(t0, 0)
	require.NoError(t, err)
	assert.True(t, ok, "nothing missed on an empty channel")
	assert.Empty(t, frames)

	appendN(t, h, t0, 7) // offsets 1..7, the count cap keeps 3..7
	f := func(since uint64, wantOK bool, want ...string) {
		t.Helper()
		frames, ok, err := h.Since(t0, since)
		require.NoError(t, err)
		require.Equal(t, wantOK, ok, "since %d", since)
		got := []string{}
		for _, fr := range frames {
			got = append(got, string(fr))
		}
		if want == nil {
			want = []string{}
		}
		assert.Equal(t, want, got, "since %d", since)
	}
	f(7, true)
	f(6, true, "m7")
	f(2, true, "m3", "m4", "m5", "m6", "m7")
	f(1, false) // message 2 was dropped by the count cap
	f(0, false)
	f(8, false) // the future
}

func TestHistoryRetentionIsExact(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	h := newMemoryHistory(HistoryLimits{Retention: 2 * time.Minute, MaxMessages: 100, MaxBytes: 1 << 20, MaxKeys: 10})
	appendN(t, h, t0, 1)
	appendN(t, h, t0.Add(time.Second), 1)

	_, ok, _ := h.Since(t0.Add(2*time.Minute-time.Nanosecond), 0)
	assert.True(t, ok, "just inside the retention")
	_, ok, _ = h.Since(t0.Add(2*time.Minute), 0)
	assert.False(t, ok, "message 1 is gone at exactly 2 minutes")
	frames, ok, _ := h.Since(t0.Add(2*time.Minute), 1)
	assert.True(t, ok)
	assert.Len(t, frames, 1)
	assert.False(t, h.Trim(t0.Add(2*time.Minute)))
	assert.True(t, h.Trim(t0.Add(2*time.Minute+time.Second)), "everything expired")
	assert.Equal(t, uint64(2), h.Latest(), "offsets never go back")
}

func TestHistoryByteCap(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	h := newMemoryHistory(HistoryLimits{Retention: time.Minute, MaxMessages: 100, MaxBytes: 10, MaxKeys: 10})
	appendN(t, h, t0, 6) // frames "m1".."m6", 2 bytes each: 5 fit in 10 bytes
	_, ok, _ := h.Since(t0, 1)
	assert.True(t, ok)
	_, ok, _ = h.Since(t0, 0)
	assert.False(t, ok)
	assert.LessOrEqual(t, h.bytes, 10)
}

func TestHistoryIdempotency(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	h := newMemoryHistory(HistoryLimits{Retention: time.Minute, MaxMessages: 1, MaxBytes: 1 << 20, MaxKeys: 2})
	off, _, dup, _ := h.Append(t0, "k1", frameOf)
	assert.Equal(t, uint64(1), off)
	assert.False(t, dup)
	appendN(t, h, t0, 1) // pushes message 1 out of the 1-message buffer

	off, frame, dup, _ := h.Append(t0.Add(59*time.Second), "k1", frameOf)
	assert.True(t, dup, "the key outlives the message the count cap dropped")
	assert.Equal(t, uint64(1), off)
	assert.Nil(t, frame)

	off, _, dup, _ = h.Append(t0.Add(time.Minute), "k1", frameOf)
	assert.False(t, dup, "the key expires with the retention")
	assert.Equal(t, uint64(3), off)

	h.Append(t0.Add(time.Minute), "k2", frameOf)
	h.Append(t0.Add(time.Minute), "k3", frameOf) // MaxKeys 2: k1 (second use) is forgotten
	_, _, dup, _ = h.Append(t0.Add(time.Minute), "k1", frameOf)
	assert.False(t, dup)
}

func TestFifoReclaimsMemory(t *testing.T) {
	var q fifo[int]
	for i := range 1000 {
		q.push(i)
		if q.len() > 10 {
			q.pop()
		}
	}
	assert.Equal(t, 10, q.len())
	assert.Equal(t, 990, *q.front())
	assert.LessOrEqual(t, len(q.buf), 2*10+34, "the dead prefix is reclaimed")
}

// BenchmarkHistorySince measures a recovery lookup of the last 100 messages
// in a full 1,000-message buffer.
func BenchmarkHistorySince(b *testing.B) {
	t0 := time.Unix(1_700_000_000, 0)
	h := newMemoryHistory(HistoryLimits{Retention: time.Hour, MaxMessages: 1000, MaxBytes: 1 << 30, MaxKeys: 1})
	for range 5000 {
		h.Append(t0, "", frameOf)
	}
	b.ReportAllocs()
	for b.Loop() {
		frames, ok, _ := h.Since(t0, h.Latest()-100)
		if !ok || len(frames) != 100 {
			b.Fatal("lookup failed")
		}
	}
}
