package actors

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// History assigns a channel's offsets and keeps its recent messages so that a
// reconnecting client can catch up. It is the one seam between a channel
// actor and where its stream lives: today memory (memoryHistory); later a
// shared store such as Redis, so that every node's channel actor sees the
// same offsets and history. Only the owning channel actor calls it.
type History interface {
	// Epoch names this history's continuity: offsets are only comparable
	// within one epoch.
	Epoch() string
	// Latest is the offset of the newest message, 0 when none was appended.
	Latest() uint64
	// Append assigns the next offset, has encode append the message's frame
	// to dst (room where the history keeps frames: a frame that fits there
	// costs no allocation) and retains it, and returns the retained frame,
	// which never changes.
	// When key is not empty and a message with the same key was appended
	// within the retention, it appends nothing and returns that message's
	// offset with duplicate set.
	Append(now time.Time, key string, encode func(dst []byte, offset uint64) []byte) (offset uint64, frame []byte, duplicate bool, err error)
	// Since returns the frames of every message after offset, oldest first,
	// or ok=false when some of them are no longer retained (or offset is in
	// the future).
	Since(now time.Time, offset uint64) (frames [][]byte, ok bool, err error)
	// Trim drops what the retention no longer covers and reports whether
	// nothing is retained.
	Trim(now time.Time) (empty bool)
}

// HistoryLimits bound one channel's history.
type HistoryLimits struct {
	// Retention is how long a message stays replayable.
	Retention time.Duration
	// MaxMessages caps the number of retained messages.
	MaxMessages int
	// MaxBytes caps the retained frames' bytes.
	MaxBytes int
	// MaxKeys caps the remembered idempotency keys.
	MaxKeys int
}

// historyEntry is a retained message: where its frame lies in the slabs.
// It holds no pointer, and neither do the slabs (byte slices), so however
// many messages a history keeps, the garbage collector marks a few large
// objects per channel, not two per message: a million retained messages
// cost a full collection about 10 ms, not 32 (BenchmarkCollectFullHistories).
type historyEntry struct {
	at   int64  // Unix ns of the append
	slab uint64 // the sequence number of the slab holding the frame
	off  uint32 // the frame's start in its slab
	n    uint32 // the frame's length
}

type keyEntry struct {
	key    string
	offset uint64
	at     int64 // Unix ns
}

// Slab sizes: a channel's first slab is small, so that a quiet channel
// keeps little; each next one doubles, up to maxSlab, so that a busy
// channel allocates once per few dozen messages. A frame larger than a
// slab gets one of its own size.
const (
	minSlab = 512
	maxSlab = 16 << 10
)

// memoryHistory is a History in process memory, bounded by HistoryLimits.
// Offsets are consecutive: entries[i] holds offset latest-len(entries)+1+i.
type memoryHistory struct {
	limits  HistoryLimits
	epoch   string
	latest  uint64
	entries fifo[historyEntry]
	bytes   int // the retained frames' bytes, the slabs' unused room aside
	// slabs hold the retained frames back to back, in offset order; a
	// slab is filled up to its capacity, then the next one starts. The
	// front one has sequence number firstSlab; it goes when its last
	// entry does. Frames handed out are sub-slices capped at their end,
	// so they keep their slab alive for as long as an outbox needs them
	// and nothing appended later can reach into them.
	slabs     fifo[[]byte]
	firstSlab uint64
	keys      map[string]uint64
	keyLog    fifo[keyEntry]
}

func newMemoryHistory(limits HistoryLimits) *memoryHistory {
	return &memoryHistory{limits: limits, epoch: newEpoch()}
}

// newEpoch returns a fresh random epoch: 12 hex characters are enough to
// never confuse two incarnations of one channel.
func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

func (h *memoryHistory) Epoch() string  { return h.epoch }
func (h *memoryHistory) Latest() uint64 { return h.latest }

func (h *memoryHistory) Append(now time.Time, key string, encode func([]byte, uint64) []byte) (uint64, []byte, bool, error) {
	h.Trim(now)
	if key != "" {
		if off, ok := h.keys[key]; ok {
			return off, nil, true, nil
		}
	}
	h.latest++
	e := h.encodeFrame(encode)
	e.at = now.UnixNano()
	h.entries.push(e)
	h.bytes += int(e.n)
	frame := h.frame(e) // before the caps below may drop e itself
	for h.entries.len() > h.limits.MaxMessages || (h.bytes > h.limits.MaxBytes && h.entries.len() > 0) {
		h.dropOldest()
	}
	if key != "" {
		if h.keys == nil {
			h.keys = make(map[string]uint64)
		}
		h.keys[key] = h.latest
		h.keyLog.push(keyEntry{key: key, offset: h.latest, at: e.at})
		for h.keyLog.len() > h.limits.MaxKeys {
			h.dropOldestKey()
		}
	}
	return h.latest, frame, false, nil
}

// encodeFrame has encode append the next message's frame to the last
// slab's free room: in place when it fits, so that a frame costs no
// allocation of its own; when it does not, append has moved it, and it
// goes into a new slab (in place of the last one when that holds nothing).
func (h *memoryHistory) encodeFrame(encode func([]byte, uint64) []byte) historyEntry {
	if h.slabs.len() == 0 {
		h.slabs.push(make([]byte, 0, minSlab))
	}
	last := h.slabs.len() - 1
	slab := h.slabs.items()[last]
	free := slab[len(slab):]
	frame := encode(free, h.latest)
	if len(frame) == 0 || sameStart(frame, free) {
		h.slabs.items()[last] = slab[:len(slab)+len(frame)]
		return historyEntry{slab: h.firstSlab + uint64(last), off: uint32(len(slab)), n: uint32(len(frame))}
	}
	next := append(make([]byte, 0, max(min(2*cap(slab), maxSlab), len(frame))), frame...)
	if len(slab) == 0 {
		h.slabs.items()[last] = next
	} else {
		h.slabs.push(next)
		last++
	}
	return historyEntry{slab: h.firstSlab + uint64(last), n: uint32(len(frame))}
}

// sameStart reports whether a and b start at the same byte.
func sameStart(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

// frame returns e's frame, capped at its end.
func (h *memoryHistory) frame(e historyEntry) []byte {
	slab := h.slabs.items()[e.slab-h.firstSlab]
	return slab[e.off : e.off+e.n : e.off+e.n]
}

func (h *memoryHistory) Since(now time.Time, offset uint64) ([][]byte, bool, error) {
	h.Trim(now)
	switch {
	case offset > h.latest:
		return nil, false, nil
	case offset == h.latest:
		return nil, true, nil
	}
	live := h.entries.items()
	first := h.latest + 1 - uint64(len(live)) // the offset of live[0]
	if len(live) == 0 || first > offset+1 {
		return nil, false, nil
	}
	live = live[offset+1-first:]
	frames := make([][]byte, len(live))
	for i, e := range live {
		frames[i] = h.frame(e)
	}
	return frames, true, nil
}

func (h *memoryHistory) Trim(now time.Time) bool {
	cutoff := now.Add(-h.limits.Retention).UnixNano()
	for h.entries.len() > 0 && h.entries.front().at <= cutoff {
		h.dropOldest()
	}
	for h.keyLog.len() > 0 && h.keyLog.front().at <= cutoff {
		h.dropOldestKey()
	}
	return h.entries.len() == 0 && h.keyLog.len() == 0
}

// dropOldest forgets the oldest message, and the slabs that no longer
// hold a retained frame: all of them once nothing is retained.
func (h *memoryHistory) dropOldest() {
	h.bytes -= int(h.entries.pop().n)
	keep := h.firstSlab + uint64(h.slabs.len()) // none
	if h.entries.len() > 0 {
		keep = h.entries.front().slab
	}
	for h.firstSlab < keep {
		h.slabs.pop()
		h.firstSlab++
	}
}

func (h *memoryHistory) dropOldestKey() {
	e := h.keyLog.pop()
	if h.keys[e.key] == e.offset {
		delete(h.keys, e.key)
	}
}

// fifo is a queue in a slice: push at the end, pop from the front. The dead
// prefix is reclaimed once it is half the slice, so memory follows the live
// size and compaction costs O(1) amortised per element.
type fifo[T any] struct {
	buf  []T
	head int
}

func (q *fifo[T]) len() int   { return len(q.buf) - q.head }
func (q *fifo[T]) items() []T { return q.buf[q.head:] }
func (q *fifo[T]) front() *T  { return &q.buf[q.head] }
func (q *fifo[T]) push(v T)   { q.buf = append(q.buf, v) }

func (q *fifo[T]) pop() T {
	var zero T
	v := q.buf[q.head]
	q.buf[q.head] = zero
	q.head++
	if q.head > 32 && q.head*2 >= len(q.buf) {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf = q.buf[:n]
		q.head = 0
	} else if q.head == len(q.buf) {
		q.buf = q.buf[:0]
		q.head = 0
	}
	return v
}
