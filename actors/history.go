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
	// Append assigns the next offset, builds the message's frame with encode
	// and retains it. When key is not empty and a message with the same key
	// was appended within the retention, it appends nothing and returns that
	// message's offset with duplicate set.
	Append(now time.Time, key string, encode func(offset uint64) []byte) (offset uint64, frame []byte, duplicate bool, err error)
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

type historyEntry struct {
	offset uint64
	at     time.Time
	frame  []byte
}

type keyEntry struct {
	key    string
	offset uint64
	at     time.Time
}

// memoryHistory is a History in process memory, bounded by HistoryLimits.
type memoryHistory struct {
	limits  HistoryLimits
	epoch   string
	latest  uint64
	entries fifo[historyEntry]
	bytes   int
	keys    map[string]uint64
	keyLog  fifo[keyEntry]
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

func (h *memoryHistory) Append(now time.Time, key string, encode func(uint64) []byte) (uint64, []byte, bool, error) {
	h.Trim(now)
	if key != "" {
		if off, ok := h.keys[key]; ok {
			return off, nil, true, nil
		}
	}
	h.latest++
	frame := encode(h.latest)
	h.entries.push(historyEntry{offset: h.latest, at: now, frame: frame})
	h.bytes += len(frame)
	for h.entries.len() > h.limits.MaxMessages || (h.bytes > h.limits.MaxBytes && h.entries.len() > 0) {
		h.dropOldest()
	}
	if key != "" {
		if h.keys == nil {
			h.keys = make(map[string]uint64)
		}
		h.keys[key] = h.latest
		h.keyLog.push(keyEntry{key: key, offset: h.latest, at: now})
		for h.keyLog.len() > h.limits.MaxKeys {
			h.dropOldestKey()
		}
	}
	return h.latest, frame, false, nil
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
	if len(live) == 0 || live[0].offset > offset+1 {
		return nil, false, nil
	}
	from := int(offset + 1 - live[0].offset)
	frames := make([][]byte, 0, len(live)-from)
	for _, e := range live[from:] {
		frames = append(frames, e.frame)
	}
	return frames, true, nil
}

func (h *memoryHistory) Trim(now time.Time) bool {
	cutoff := now.Add(-h.limits.Retention)
	for h.entries.len() > 0 && !h.entries.front().at.After(cutoff) {
		h.dropOldest()
	}
	for h.keyLog.len() > 0 && !h.keyLog.front().at.After(cutoff) {
		h.dropOldestKey()
	}
	return h.entries.len() == 0 && h.keyLog.len() == 0
}

func (h *memoryHistory) dropOldest() {
	h.bytes -= len(h.entries.pop().frame)
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
