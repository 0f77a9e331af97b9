package testutil

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/protocol"
)

// Subscriber is a light WebSocket client for tests with hundreds or
// thousands of connections. Unlike Client it queues nothing for the test:
// its read goroutine checks every frame as it arrives. On each channel,
// messages must follow the sub's ack (or a reset) with consecutive offsets,
// nothing skipped, nothing twice; anything else, an err frame included, is
// recorded as a failure. It also records the latency of every message whose
// data starts with a Stamp.
//
// Concurrency: the read goroutine and the test's goroutines share the
// state under mu; every method is safe from any goroutine.
type Subscriber struct {
	// Static after DialSubscriber.
	conn   *gws.Conn
	closed chan struct{}

	mu sync.Mutex
	// Guarded by mu.
	code      uint16 // close code the server sent, 0 when none
	nextID    uint64
	pending   map[uint64]pendingSub
	subs      map[string]*SubState
	failures  []string
	latencies []time.Duration
}

// pendingSub is a sub request waiting for its ack.
type pendingSub struct {
	ch    string
	since uint64 // the offset asked to recover after, if any
}

// SubState is what a Subscriber knows of one channel.
type SubState struct {
	// Acked is set by the sub's ack; Recovered and Epoch are the ack's,
	// Epoch then follows resets.
	Acked     bool
	Recovered bool
	Epoch     string
	// Last is the offset of the last message seen, or the offset the
	// stream continues after: the ack's, the since offset of a recovered
	// ack (the replay follows), a reset's.
	Last uint64
	// Msgs and Resets count the frames received.
	Msgs, Resets int
}

// DialSubscriber connects to the relay at addr (host:port) with token. It
// does not touch a testing.TB, so that goroutines may dial concurrently;
// the caller closes the Subscriber.
func DialSubscriber(addr, token string) (*Subscriber, error) {
	s := &Subscriber{closed: make(chan struct{}), pending: make(map[uint64]pendingSub), subs: make(map[string]*SubState)}
	conn, _, err := gws.NewClient(s, &gws.ClientOption{
		Addr:             "ws://" + addr + "/v1/ws?token=" + token,
		HandshakeTimeout: Wait,
	})
	if err != nil {
		return nil, err
	}
	s.conn = conn
	go conn.ReadLoop()
	return s, nil
}

// Subscribe asks for ch, without waiting for the ack.
func (s *Subscriber) Subscribe(ch string) error {
	return s.subscribe(ch, 0, "")
}

// SubscribeSince asks for ch, to recover after offset of epoch, without
// waiting for the ack.
func (s *Subscriber) SubscribeSince(ch, epoch string, offset uint64) error {
	return s.subscribe(ch, offset, `,"since":{"epoch":`+quote(epoch)+`,"offset":`+itoa(offset)+`}`)
}

func (s *Subscriber) subscribe(ch string, offset uint64, since string) error {
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.pending[id] = pendingSub{ch: ch, since: offset}
	s.subs[ch] = &SubState{}
	s.mu.Unlock()
	return s.conn.WriteString(`{"op":"sub","id":` + itoa(id) + `,"ch":` + quote(ch) + since + `}`)
}

// State returns what the subscriber knows of ch (zero before Subscribe).
func (s *Subscriber) State(ch string) SubState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.subs[ch]; st != nil {
		return *st
	}
	return SubState{}
}

// Failures returns what went wrong so far.
func (s *Subscriber) Failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.failures)
}

// TakeLatencies returns the latencies recorded since the last call.
func (s *Subscriber) TakeLatencies() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.latencies
	s.latencies = nil
	return l
}

// Closed is closed when the connection has ended.
func (s *Subscriber) Closed() <-chan struct{} { return s.closed }

// CloseCode returns the close code the server sent, 0 when none (or not
// closed yet).
func (s *Subscriber) CloseCode() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code
}

// Close closes the connection from the client side.
func (s *Subscriber) Close() {
	_ = s.conn.WriteClose(1000, nil)
	_ = s.conn.NetConn().Close()
}

// Stamp returns message data that carries the time now, padded with 'x' to
// at least size bytes, for the receive latency a Subscriber records.
func Stamp(size int) string {
	d := "t" + strconv.FormatInt(time.Now().UnixNano(), 10) + ";"
	return d + strings.Repeat("x", max(size-len(d), 0))
}

// gws callbacks, on the subscriber's read goroutine.

func (s *Subscriber) OnOpen(*gws.Conn) {}

func (s *Subscriber) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	s.mu.Lock()
	if errors.As(err, &ce) {
		s.code = ce.Code
	}
	s.mu.Unlock()
	close(s.closed)
}

func (s *Subscriber) OnPing(conn *gws.Conn, p []byte) { _ = conn.WritePong(p) }
func (s *Subscriber) OnPong(*gws.Conn, []byte)        {}

func (s *Subscriber) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	now := time.Now()
	frames, err := protocol.SplitServerFrames(m.Bytes())
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failLocked("undecodable frame: %v", err)
		return
	}
	for _, f := range frames {
		s.handleLocked(f, now)
	}
}

func (s *Subscriber) handleLocked(f protocol.ServerFrame, now time.Time) {
	switch f.Op {
	case "ack":
		if f.ID == nil || f.Recovered == nil {
			s.failLocked("ack without id or recovered: %+v", f)
			return
		}
		p, ok := s.pending[*f.ID]
		if !ok || p.ch != f.Ch {
			s.failLocked("ack for no sub: %+v", f)
			return
		}
		delete(s.pending, *f.ID)
		st := s.subs[p.ch]
		st.Acked, st.Recovered, st.Epoch, st.Last = true, *f.Recovered, f.Epoch, f.Offset
		if *f.Recovered {
			st.Last = p.since
		}
	case "msg":
		st := s.subs[f.Ch]
		switch {
		case st == nil || !st.Acked:
			s.failLocked("msg %d on %s before its ack", f.Offset, f.Ch)
			return
		case f.Offset != st.Last+1:
			s.failLocked("msg %d on %s, want %d", f.Offset, f.Ch, st.Last+1)
		}
		st.Last = f.Offset
		st.Msgs++
		if ts, ok := strings.CutPrefix(f.Data, "t"); ok {
			ts, _, _ = strings.Cut(ts, ";")
			if ns, err := strconv.ParseInt(ts, 10, 64); err == nil {
				s.latencies = append(s.latencies, now.Sub(time.Unix(0, ns)))
			}
		}
	case "reset":
		st := s.subs[f.Ch]
		if st == nil || !st.Acked {
			s.failLocked("reset on %s before its ack", f.Ch)
			return
		}
		st.Epoch, st.Last = f.Epoch, f.Offset
		st.Resets++
	default:
		s.failLocked("unexpected frame %+v", f)
	}
}

func (s *Subscriber) failLocked(format string, args ...any) {
	if len(s.failures) < 10 {
		s.failures = append(s.failures, fmt.Sprintf(format, args...))
	}
}

// DialSubscribers dials n Subscribers with token, eight at a time, and
// subscribes the i-th to channelOf(i). It fails the test on the first error
// and closes them all when the test ends.
func DialSubscribers(t testing.TB, addr, token string, n int, channelOf func(i int) string) []*Subscriber {
	t.Helper()
	subs := make([]*Subscriber, n)
	var dialed sync.WaitGroup
	var firstErr atomic.Pointer[error]
	work := make(chan int)
	for range 8 {
		dialed.Go(func() {
			for i := range work {
				s, err := DialSubscriber(addr, token)
				if err == nil {
					subs[i] = s
					err = s.Subscribe(channelOf(i))
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	for i := range subs {
		work <- i
	}
	close(work)
	dialed.Wait()
	t.Cleanup(func() {
		for _, s := range subs {
			if s != nil {
				s.Close()
			}
		}
	})
	if err := firstErr.Load(); err != nil {
		require.NoError(t, *err, "dial or subscribe")
	}
	return subs
}
