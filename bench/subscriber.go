package bench

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// maxHoleSpan bounds how many missing offsets one gap records one by one;
// beyond it they are only counted as lost (a late arrival from such a gap
// is then counted as a duplicate).
const maxHoleSpan = 1 << 16

// stream checks one subscription's offsets: every offset after the ack's
// must arrive exactly once and in order.
//
// Owned by the subscriber's reader goroutine until it exits.
type stream struct {
	last      uint64 // highest offset received (the ack's offset at first)
	received  int64
	dups      int64
	reorders  int64
	bigGaps   int64               // offsets missed in gaps longer than maxHoleSpan
	holes     map[uint64]struct{} // offsets below last not yet received
	resets    int64
	unmatched int64 // msg objects without a bench timestamp
}

// add records offset o.
func (s *stream) add(o uint64) {
	switch {
	case o == s.last+1:
		s.last = o
		s.received++
	case o > s.last+1:
		if s.holes == nil {
			s.holes = make(map[uint64]struct{})
		}
		gap := o - s.last - 1
		if gap > maxHoleSpan {
			s.bigGaps += int64(gap)
		} else {
			for k := s.last + 1; k < o; k++ {
				s.holes[k] = struct{}{}
			}
		}
		s.last = o
		s.received++
	default:
		if _, ok := s.holes[o]; ok {
			delete(s.holes, o)
			s.reorders++
			s.received++
			return
		}
		s.dups++
	}
}

// lost returns the offsets up to want that never arrived, and the ones
// received past want (someone else published, or a publish that failed
// on the bench's side still went through).
func (s *stream) lost(want uint64) (lost, extra int64) {
	lost = int64(len(s.holes)) + s.bigGaps
	if want > s.last {
		lost += int64(want - s.last)
	} else {
		extra = int64(s.last - want)
	}
	return lost, extra
}

// latencies is a set of HDR histograms of microseconds; each subscriber
// records into one shard so that readers rarely contend.
type latencies struct {
	shards []latencyShard
}

type latencyShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram // guarded by mu
	_  [40]byte                // keep shards' locks on separate cache lines
}

const (
	latencyMinMicros = 1
	latencyMaxMicros = 60_000_000 // 1 minute; longer is clamped
	latencySigFigs   = 3
)

func newLatencies(n int) *latencies {
	l := &latencies{shards: make([]latencyShard, n)}
	for i := range l.shards {
		l.shards[i].h = newHistogram()
	}
	return l
}

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(latencyMinMicros, latencyMaxMicros, latencySigFigs)
}

// record adds latencies in microseconds to shard i.
func (l *latencies) record(i int, micros []int64) {
	sh := &l.shards[i%len(l.shards)]
	sh.mu.Lock()
	for _, v := range micros {
		_ = sh.h.RecordValue(min(max(v, latencyMinMicros), latencyMaxMicros))
	}
	sh.mu.Unlock()
}

// merged returns the sum of the shards.
func (l *latencies) merged() *hdrhistogram.Histogram {
	h := newHistogram()
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		h.Merge(sh.h)
		sh.mu.Unlock()
	}
	return h
}

// reset empties every shard.
func (l *latencies) reset() {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		sh.h.Reset()
		sh.mu.Unlock()
	}
}

// counters are the run's live totals, added once per frame by readers and
// once per request by publishers, read by the progress line and the drain.
type counters struct {
	delivered     atomic.Int64
	published     atomic.Int64
	publishErrors atomic.Int64
	readErrors    atomic.Int64 // subscriptions that ended before the run did
	open          atomic.Int64 // connections open
}

// subscriber is one WebSocket connection subscribed to one channel (or to
// none, in the connect scenario).
type subscriber struct {
	// Static after dial.
	conn    *wsConn
	n       int // connection number
	channel int // index into run.channels; -1 when not subscribed
	lat     *latencies
	ctr     *counters
	acked   chan struct{} // closed when the sub is answered or the reader ends
	done    chan struct{} // closed when the reader goroutine returns
	closing *atomic.Bool  // set by the run before it closes connections

	// Owned by the reader goroutine; read by others only after done (or,
	// for ackOffset and ackErr, after acked) is closed.
	answered  bool // the sub was answered (ack or err), or there is none
	ackOK     bool // the sub was acked
	ackOffset uint64
	ackErr    string
	st        stream
	readErr   error
	closeCode uint16
	micros    []int64 // reused per frame
}

// subFrame returns the sub request for channel ch.
func subFrame(ch string) []byte {
	b := append([]byte(`{"op":"sub","id":1,"ch":`), '"')
	b = append(b, ch...) // bench channel names need no escaping
	return append(b, `"}`...)
}

// readLoop reads until the connection fails or closes. It runs on its own
// goroutine and is the only user of s.conn after the sub was sent.
func (s *subscriber) readLoop() {
	defer close(s.done)
	defer s.ctr.open.Add(-1)
	if s.channel < 0 {
		s.answered = true
		close(s.acked)
	}
	defer func() {
		if !s.answered {
			close(s.acked)
		}
	}()
	for {
		p, err := s.conn.readMessage()
		if err != nil {
			if ce := (closeError{}); errors.As(err, &ce) {
				s.closeCode = ce.code
			}
			if !s.closing.Load() {
				s.readErr = err
				s.ctr.readErrors.Add(1)
			}
			return
		}
		wasAnswered := s.answered
		msgs := s.handle(p, time.Now().UnixNano())
		if !wasAnswered && s.answered {
			close(s.acked)
		}
		if len(s.micros) > 0 {
			s.lat.record(s.n, s.micros)
		}
		if msgs > 0 {
			s.ctr.delivered.Add(int64(msgs))
		}
	}
}

// handle processes one server message received at now (unix ns): the
// objects in it, separated by '\n'. It returns how many were msg objects,
// and leaves their latencies in s.micros. It must not allocate: it runs
// for every frame of every subscriber.
func (s *subscriber) handle(p []byte, now int64) (msgs int) {
	s.micros = s.micros[:0]
	for len(p) > 0 {
		var obj []byte
		obj, p = nextObject(p)
		op := string(stringAfter(obj, keyOp)) // no allocation: only compared
		switch {
		case op == "msg":
			msgs++
			if o, ok := uintAfter(obj, keyOffset); ok {
				s.st.add(o)
			}
			if ts, ok := sentAt(obj); ok {
				s.micros = append(s.micros, (now-ts)/1e3)
			} else {
				s.st.unmatched++
			}
		case op == "ack" && !s.answered:
			s.ackOffset, _ = uintAfter(obj, keyOffset)
			s.st.last = s.ackOffset
			s.ackOK, s.answered = true, true
		case op == "err" && !s.answered:
			s.ackErr = string(stringAfter(obj, keyCode))
			s.answered = true
		case op == "reset":
			// The channel's actor restarted: offsets continue after
			// the reset's, and continuity before it cannot be judged.
			s.st.resets++
			s.st.last, _ = uintAfter(obj, keyOffset)
			clear(s.st.holes)
		}
	}
	return msgs
}
