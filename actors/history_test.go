package actors

import (
	"bytes"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func frameOf(dst []byte, offset uint64) []byte {
	return strconv.AppendUint(append(dst, 'm'), offset, 10)
}

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

// TestHistoryFramesStayPut appends frames of many sizes, some larger than a
// slab, and checks that every frame handed out, and every frame Since
// returns, is the one encoded, however many were appended after it, and
// that writing past a frame's end cannot reach the next one.
func TestHistoryFramesStayPut(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	h := newMemoryHistory(HistoryLimits{Retention: time.Minute, MaxMessages: 300, MaxBytes: 1 << 30, MaxKeys: 1})
	content := func(offset uint64) []byte {
		size := int(offset*37) % 700
		if offset%50 == 0 {
			size = maxSlab + 100 // a frame of its own
		}
		return bytes.Repeat([]byte{byte(offset)}, size+1)
	}
	handed := map[uint64][]byte{}
	for range 1000 {
		off, frame, _, err := h.Append(t0, "", func(dst []byte, offset uint64) []byte {
			if offset%7 == 0 {
				return content(offset) // an encoder may ignore dst
			}
			return append(dst, content(offset)...)
		})
		require.NoError(t, err)
		require.Equal(t, len(frame), cap(frame), "a frame is capped at its end")
		handed[off] = frame
		_ = append(frame, 0xff) // must not land in the next frame
	}
	for off, frame := range handed {
		require.Equal(t, content(off), frame, "frame %d changed after it was handed out", off)
	}
	frames, ok, err := h.Since(t0, 700)
	require.NoError(t, err)
	require.True(t, ok)
	require.Len(t, frames, 300)
	for i, frame := range frames {
		require.Equal(t, content(uint64(701+i)), frame, "replayed frame %d", 701+i)
	}
}

// TestHistoryAppendAllocatesOnlySlabs checks that a frame is encoded
// where it is kept: appending costs an allocation only when a slab fills.
func TestHistoryAppendAllocatesOnlySlabs(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	h := newMemoryHistory(HistoryLimits{Retention: time.Minute, MaxMessages: 100, MaxBytes: 1 << 30, MaxKeys: 1})
	frame := bytes.Repeat([]byte{'x'}, 100)
	encode := func(dst []byte, _ uint64) []byte { return append(dst, frame...) }
	appendN := func() { h.Append(t0, "", encode) }
	for range 1000 { // the entries' fifo reaches its size
		appendN()
	}
	// One 16 KiB slab every 163 frames: a mean of 0.006 allocations.
	assert.Zero(t, testing.AllocsPerRun(1000, appendN))
}

// TestHistoryReleasesSlabs checks that slabs go with their last retained
// frame: the memory a history holds follows what it retains, and nothing
// once it retains nothing.
func TestHistoryReleasesSlabs(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	h := newMemoryHistory(HistoryLimits{Retention: time.Minute, MaxMessages: 10, MaxBytes: 1 << 30, MaxKeys: 1})
	frame := bytes.Repeat([]byte{'x'}, 100)
	for range 10_000 {
		h.Append(t0, "", func(dst []byte, _ uint64) []byte { return append(dst, frame...) })
		held := 0
		for _, slab := range h.slabs.items() {
			held += cap(slab)
		}
		// 10 frames of 100 B span at most two slabs.
		require.LessOrEqual(t, held, 2*maxSlab)
	}
	assert.True(t, h.Trim(t0.Add(time.Minute)), "all expired")
	assert.Zero(t, h.slabs.len(), "no slab outlives the last frame")
	assert.Zero(t, h.bytes)
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

// BenchmarkCollectFullHistories measures what full replay buffers cost the
// garbage collector: one collection of a heap holding 1,000 channels' worth
// of retained messages (1,000 each, 200-byte frames, the shape of 1,000
// channels at 8 publishes/s after 2 minutes). Each collection marks
// everything the histories keep, so ns/op is that mark work.
func BenchmarkCollectFullHistories(b *testing.B) {
	t0 := time.Unix(1_700_000_000, 0)
	limits := HistoryLimits{Retention: time.Hour, MaxMessages: 1000, MaxBytes: 1 << 30, MaxKeys: 1}
	histories := make([]*memoryHistory, 1000)
	msg := []byte(ciphertext(200))
	for i := range histories {
		h := newMemoryHistory(limits)
		for range 1000 {
			h.Append(t0, "", func(dst []byte, _ uint64) []byte { return append(dst, msg...) })
		}
		histories[i] = h
	}
	runtime.GC()
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(histories)
}
