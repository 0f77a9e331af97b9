package bench

import (
	"bytes"
	"errors"
	"fmt"
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
	reconnects    atomic.Int64 // churn: resubscribes answered
}

// subscriber is one subscription: one channel of a WebSocket connection
// (or none, in the connect scenario). The subscriptions of one connection
// are a group (see group).
type subscriber struct {
	// Static after dial.
	conn    *wsConn
	n       int // connection number
	channel int // index into run.channels; -1 when not subscribed
	lat     *latencies
	ctr     *counters
	acked   chan struct{} // closed when the sub is answered or the reader ends
	done    chan struct{} // closed when reading ended
	closing *atomic.Bool  // set by the run before it closes connections
	polled  bool          // read by a poller, not a goroutine of its own
	// live counts its channel's live subscriptions (nil without one): a
	// subscription the relay ends stops being expected to receive.
	live *atomic.Int64
	// group holds the subscribers of every channel the connection is
	// subscribed to (a dashboard's gadgets, Config.Gadgets), this one or
	// the first of them being the connection's reader, which routes each
	// message to its channel's; a one-channel connection's group is
	// itself alone.
	group []*subscriber
	// stall is set for the subscribers that the slow scenario stops; nil
	// for every other. Their deliveries are not counted in ctr.delivered
	// and their latencies not recorded (lat is nil).
	stall *stall

	// connMu guards conn where the reader replaces it (churn), against
	// closeAll and the run arming churn's first deadline; the reader itself
	// reads conn without it, being its only writer.
	connMu sync.Mutex

	// Owned by the reader goroutine; read by others only after done (or,
	// for ackOffset and ackErr, after acked) is closed.
	answered  bool   // the sub was answered (ack or err), or there is none
	ackClosed bool   // acked was closed
	ackOK     bool   // the sub was acked
	ackOffset uint64 // the first ack's offset: the stream starts after it
	ackErr    string
	st        stream
	rs        resumes // churn's reconnects
	readErr   error
	closeCode uint16
	micros    []int64 // reused per frame
}

// stall holds the slow subscribers of the slow scenario.
type stall struct {
	// stop, once set, makes each slow subscriber stop reading after its
	// next frame; it is set by the run, read by the readers.
	stop atomic.Bool
	// resume is closed to let them read again (release).
	resume chan struct{}
	once   sync.Once
}

// release lets the stopped subscribers read again. Any goroutine may call
// it, more than once.
func (st *stall) release() { st.once.Do(func() { close(st.resume) }) }

// stopped reports whether s is a slow subscriber that was told to stop.
func (s *subscriber) stopped() bool { return s.stall != nil && s.stall.stop.Load() }

// ack takes the answer to a sub: the first one starts the stream after
// its offset; a resubscribe's (churn) must be recovered in the same epoch,
// so that the stream goes on where it was.
func (s *subscriber) ack(obj []byte) {
	off, _ := uintAfter(obj, keyOffset)
	epoch := stringAfter(obj, keyEpoch)
	s.ackOK, s.answered = true, true
	if !s.rs.since {
		s.ackOffset, s.st.last = off, off
		s.rs.epoch = append(s.rs.epoch[:0], epoch...)
		return
	}
	s.rs.acks++
	switch {
	case bytes.Equal(epoch, s.rs.epoch) && bytes.Contains(obj, keyRecovered):
		s.rs.recovered++
		s.rs.replayTo = off // what follows up to off is the replay
	case bytes.Equal(epoch, s.rs.epoch):
		// Not recovered: only live messages follow, the ones up to
		// off never come.
		s.rs.notRecovered++
		if off > s.st.last {
			s.st.bigGaps += int64(off - s.st.last)
			s.st.last = off
		}
	default:
		// A new epoch: the stream restarted, and offsets before and
		// after cannot be compared; count it as a reset.
		s.rs.notRecovered++
		s.st.resets++
		s.st.last = off
		clear(s.st.holes)
		s.rs.epoch = append(s.rs.epoch[:0], epoch...)
	}
}

// subFrame returns the sub request for channel ch, with id (a connection
// numbers its subscriptions from 1, in its group's order).
func subFrame(id int, ch string) []byte {
	b := fmt.Appendf(nil, `{"op":"sub","id":%d,"ch":"`, id)
	b = append(b, ch...) // bench channel names need no escaping
	return append(b, `"}`...)
}

// readLoop reads until the connection fails or closes. It runs on its own
// goroutine and is the only user of s.conn after the sub was sent.
func (s *subscriber) readLoop() {
	s.begin()
	for {
		p, err := s.conn.readMessage()
		if err != nil {
			s.end(err)
			return
		}
		s.deliver(p)
		if s.stopped() {
			// A client that stopped reading: the socket's buffers fill,
			// then the relay's queue for it.
			<-s.stall.resume
		}
	}
}

// pollRead is readLoop's body for a subscriber on a poller: it reads what
// the socket holds and delivers the messages complete in it. It reports
// whether the subscriber ended (then the poller drops it).
func (s *subscriber) pollRead() (ended bool) {
	n, err := s.conn.readOnce()
	if err == nil && n == 0 {
		return false
	}
	// Bytes that came with an error are parsed first.
	for {
		p, ok, perr := s.conn.nextMessage()
		if perr != nil {
			err = perr
			break
		}
		if !ok {
			break
		}
		s.deliver(p)
	}
	if err == nil {
		return false
	}
	_ = s.conn.nc.Close()
	s.end(err)
	return true
}

// begin starts reading: a connection without a subscription has no answer
// to wait for.
func (s *subscriber) begin() {
	if s.channel < 0 {
		s.answered = true
		s.closeAcked()
	}
}

// deliver handles one message and counts it.
func (s *subscriber) deliver(p []byte) {
	s.count(s.handle(p, time.Now().UnixNano()))
}

func (s *subscriber) closeAcked() {
	if !s.ackClosed {
		s.ackClosed = true
		close(s.acked)
	}
}

// end records, for every subscription of the connection, why reading
// ended (nothing when the run closed it) and releases whoever waits for
// the reader.
func (s *subscriber) end(err error) {
	var code uint16
	if ce := (closeError{}); errors.As(err, &ce) {
		code = ce.code
	}
	closing := s.closing.Load()
	for _, m := range s.group {
		m.closeCode = code
		if !closing {
			m.readErr = err
			m.ctr.readErrors.Add(1)
			if m.ackOK && m.stall == nil {
				m.live.Add(-1) // subscribeAll counts exactly these
			}
		}
		m.closeAcked()
	}
	s.ctr.open.Add(-1)
	for _, m := range s.group {
		close(m.done)
	}
}

// count records a frame's msgs and their latencies (left in s.micros).
func (s *subscriber) count(msgs int) {
	if len(s.micros) > 0 && s.lat != nil {
		s.lat.record(s.n, s.micros)
	}
	if msgs > 0 && s.stall == nil {
		s.ctr.delivered.Add(int64(msgs))
	}
}

// handle processes one server message received at now (unix ns): the
// objects in it, separated by '\n'. It returns how many were msg objects,
// and leaves their latencies in s.micros. It must not allocate: it runs
// for every frame of every subscriber.
func (s *subscriber) handle(p []byte, now int64) (msgs int) {
	s.micros = s.micros[:0]
	for len(p) > 0 {
		if m, rest, ok := cutMsg(p); ok {
			p = rest
			msgs++
			s.msg(s.memberOf(m.ch), &m, now)
			continue
		}
		var obj []byte
		obj, p = nextObject(p)
		op := string(stringAfter(obj, keyOp)) // no allocation: only compared
		t := s.member(obj)
		switch {
		case op == "msg":
			msgs++
			var m msgFields
			m.offset, m.numbered = uintAfter(obj, keyOffset)
			m.sent, m.timed = sentAt(obj)
			s.msg(t, &m, now)
		case op == "ack" && !t.answered:
			t.ack(obj)
			t.closeAcked()
		case op == "err" && !t.answered:
			t.ackErr = string(stringAfter(obj, keyCode))
			t.answered = true
			t.closeAcked()
		case op == "reset":
			// The channel's actor restarted: offsets continue after
			// the reset's, in its epoch (which a churn resubscribe
			// names), and continuity before it cannot be judged.
			t.st.resets++
			t.st.last, _ = uintAfter(obj, keyOffset)
			clear(t.st.holes)
			t.rs.epoch = append(t.rs.epoch[:0], stringAfter(obj, keyEpoch)...)
		}
	}
	return msgs
}

// msg records message m for t, the subscription it came for: its offset,
// and its latency in s.micros.
func (s *subscriber) msg(t *subscriber, m *msgFields, now int64) {
	if m.numbered {
		t.st.add(m.offset)
		if m.offset <= t.rs.replayTo {
			t.rs.replayed++
		}
	}
	if m.timed {
		s.micros = append(s.micros, (now-m.sent)/1e3)
	} else {
		t.st.unmatched++
	}
}

// member returns the subscriber of the group that obj is for: by its
// channel (msg, ack, reset: the bench's names end in "/g<index>"), else by
// its id (err: the sub's place in the group, from 1), else s.
func (s *subscriber) member(obj []byte) *subscriber {
	if len(s.group) <= 1 {
		return s
	}
	if ch := stringAfter(obj, keyCh); len(ch) > 0 {
		return s.memberOf(ch)
	}
	if id, ok := uintAfter(obj, keyID); ok && id >= 1 && id <= uint64(len(s.group)) {
		return s.group[id-1]
	}
	return s
}

// memberOf returns the subscriber of the group for channel ch, else s.
func (s *subscriber) memberOf(ch []byte) *subscriber {
	if len(s.group) <= 1 {
		return s
	}
	if i := bytes.LastIndex(ch, []byte("/g")); i >= 0 {
		if c, ok := parseUint(ch[i+2:]); ok {
			if j := int(c) - s.group[0].channel; j >= 0 && j < len(s.group) {
				return s.group[j]
			}
		}
	}
	return s
}
