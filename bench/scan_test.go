package bench

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/protocol"
)

func TestStream(t *testing.T) {
	type want struct{ lost, extra, dups, reorders int64 }
	f := func(name string, ack uint64, offsets []uint64, published uint64, w want) {
		t.Run(name, func(t *testing.T) {
			s := stream{last: ack}
			for _, o := range offsets {
				s.add(o)
			}
			lost, extra := s.lost(ack + published)
			assert.Equal(t, w, want{lost, extra, s.dups, s.reorders})
		})
	}
	f("in order", 0, []uint64{1, 2, 3}, 3, want{})
	f("after ack", 41, []uint64{42, 43}, 2, want{})
	f("tail lost", 0, []uint64{1, 2}, 4, want{lost: 2})
	f("gap lost", 0, []uint64{1, 4}, 4, want{lost: 2})
	f("duplicate", 0, []uint64{1, 2, 2, 3}, 3, want{dups: 1})
	f("reordered", 0, []uint64{1, 3, 2}, 3, want{reorders: 1})
	f("reordered then dup", 0, []uint64{2, 1, 1}, 2, want{reorders: 1, dups: 1})
	f("extra", 0, []uint64{1, 2, 3}, 2, want{extra: 1})
	f("replayed before ack", 5, []uint64{5, 6}, 1, want{dups: 1})
}

func TestPayload(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, size := range []int{minPayloadBytes, 64, 1000} {
		data := appendPayload(nil, at, size)
		assert.Len(t, data, size)
		frame := protocol.AppendMsg(nil, "site/dash/g1", benchEvent, string(data), 58)
		ts, ok := sentAt(frame)
		require.True(t, ok)
		assert.Equal(t, at.UnixNano(), ts)
		o, ok := uintAfter(frame, keyOffset)
		require.True(t, ok)
		assert.Equal(t, uint64(58), o)
	}
}

// TestCutMsg: the one-pass reading of a msg in the relay's layout agrees
// with the general one, and leaves anything else to it.
func TestCutMsg(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	data := string(appendPayload(nil, at, 64))
	next := protocol.AppendAck(nil, protocol.ID{N: 3, Set: true})

	m, rest, ok := cutMsg(frames(protocol.AppendMsg(nil, "s/d/g7", benchEvent, data, 58), next))
	require.True(t, ok)
	assert.Equal(t, msgFields{ch: []byte("s/d/g7"), offset: 58, numbered: true, sent: at.UnixNano(), timed: true}, m)
	assert.Equal(t, next, rest, "what follows the newline")

	m, rest, ok = cutMsg(protocol.AppendMsg(nil, "s/d/g7", "e", "not the bench's", 1))
	require.True(t, ok)
	assert.False(t, m.timed)
	assert.Empty(t, rest)

	others := map[string][]byte{
		"escaped quote":  protocol.AppendMsg(nil, `s/d/"g`, benchEvent, data, 5),
		"other order":    fmt.Appendf(nil, `{"op":"msg","ch":"s/d/g","data":%q,"event":"e","offset":5}`, data),
		"no offset":      fmt.Appendf(nil, `{"op":"msg","ch":"s/d/g","event":"e","data":%q}`, data),
		"trailing bytes": append(protocol.AppendMsg(nil, "s/d/g", benchEvent, data, 5), ' '),
		"not a msg":      next,
	}
	for name, obj := range others {
		_, _, ok := cutMsg(obj)
		assert.False(t, ok, name)
	}

	// handle reads those by the general path.
	s := &subscriber{channel: 0, answered: true}
	assert.Equal(t, 2, s.handle(frames(others["escaped quote"], others["other order"]), at.UnixNano()))
	assert.Equal(t, uint64(5), s.st.last)
	assert.Equal(t, int64(1), s.st.dups, "the same offset twice, read both ways")
	assert.Equal(t, []int64{0, 0}, s.micros)
}

// frames joins server frames as the relay coalesces them.
func frames(objs ...[]byte) []byte {
	var b []byte
	for i, o := range objs {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, o...)
	}
	return b
}

func TestHandle(t *testing.T) {
	now := time.Now()
	data := string(appendPayload(nil, now.Add(-3*time.Millisecond), 64))
	ack := protocol.AppendSubAck(nil, protocol.ID{N: 1, Set: true}, "s/d/g", "e1", 7, false)
	s := &subscriber{channel: 0, acked: make(chan struct{})}
	msgs := s.handle(frames(ack, protocol.AppendMsg(nil, "s/d/g", benchEvent, data, 8),
		protocol.AppendMsg(nil, "s/d/g", benchEvent, data, 9)), now.UnixNano())
	assert.Equal(t, 2, msgs)
	assert.True(t, s.ackOK)
	assert.True(t, s.ackClosed, "whoever waits for the answer is released")
	assert.Equal(t, uint64(7), s.ackOffset)
	assert.Equal(t, uint64(9), s.st.last)
	assert.Equal(t, []int64{3000, 3000}, s.micros)

	s = &subscriber{channel: 0, acked: make(chan struct{})}
	s.handle(protocol.AppendErr(nil, protocol.ID{N: 1, Set: true}, protocol.CodeForbidden, "no"), now.UnixNano())
	assert.True(t, s.answered)
	assert.False(t, s.ackOK)
	assert.Equal(t, "forbidden", s.ackErr)
}

// TestHandleRoutes: on a connection subscribed to a dashboard's gadgets,
// each object reaches the subscriber of its channel (by name), an err the
// subscriber of its sub (by id).
func TestHandleRoutes(t *testing.T) {
	now := time.Now()
	data := string(appendPayload(nil, now, 64))
	group := make([]*subscriber, 3)
	for j := range group {
		group[j] = &subscriber{channel: 4 + j, group: group, acked: make(chan struct{})} // channels g4, g5, g6
	}
	s := group[0]
	id := func(n uint64) protocol.ID { return protocol.ID{N: n, Set: true} }
	msgs := s.handle(frames(
		protocol.AppendSubAck(nil, id(1), "s/d/g4", "e", 10, false),
		protocol.AppendSubAck(nil, id(2), "s/d/g5", "e", 20, false),
		protocol.AppendErr(nil, id(3), protocol.CodeLimit, "too many"),
		protocol.AppendMsg(nil, "s/d/g5", benchEvent, data, 21),
		protocol.AppendMsg(nil, "s/d/g4", benchEvent, data, 11),
		protocol.AppendMsg(nil, "s/d/g5", benchEvent, data, 22),
	), now.UnixNano())
	assert.Equal(t, 3, msgs)
	assert.Equal(t, []uint64{11, 22}, []uint64{group[0].st.last, group[1].st.last})
	assert.Equal(t, []int64{1, 2}, []int64{group[0].st.received, group[1].st.received})
	assert.True(t, group[0].ackOK && group[1].ackOK)
	assert.Equal(t, "limit", group[2].ackErr)
	assert.Len(t, s.micros, 3, "the connection's latencies, whichever channel")
}

func TestHandleNoAlloc(t *testing.T) {
	now := time.Now()
	data := string(appendPayload(nil, now, 64))
	var objs [][]byte
	for i := range 8 {
		objs = append(objs, protocol.AppendMsg(nil, "ari:cloud:jira::site/bench/bench-1/g0", benchEvent, data, uint64(i+1)))
	}
	frame := frames(objs...)
	s := &subscriber{channel: 0, answered: true, micros: make([]int64, 0, 16)}
	allocs := testing.AllocsPerRun(100, func() {
		s.st.last = 0
		s.handle(frame, now.UnixNano())
	})
	assert.Zero(t, allocs)
}

func TestFormatCount(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1000: "-1,000"} {
		assert.Equal(t, want, formatCount(n), strconv.FormatInt(n, 10))
	}
}

// BenchmarkHandle is the load generator's per-frame cost: a frame of
// coalesced msg objects, as the relay writes under load.
func BenchmarkHandle(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run("msgs="+strconv.Itoa(n), func(b *testing.B) {
			now := time.Now()
			data := string(appendPayload(nil, now, 64))
			var objs [][]byte
			for i := range n {
				objs = append(objs, protocol.AppendMsg(nil, "ari:cloud:jira::site/bench/bench-1/g0", benchEvent, data, uint64(i+1)))
			}
			frame := frames(objs...)
			s := &subscriber{channel: 0, answered: true}
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				s.st.last = 0
				s.handle(frame, now.UnixNano())
			}
		})
	}
}
