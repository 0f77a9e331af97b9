package actors

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/protocol"
)

// An empty batch is answered at once, and a stopped hub fails publishes
// at once rather than at the publish timeout.
func TestPublishAnswersPromptly(t *testing.T) {
	h := newBenchHub(t)
	h.cfg.PublishTimeout = time.Minute

	start := time.Now()
	results, errs := h.PublishBatch(nil)
	assert.Empty(t, results)
	assert.Empty(t, errs)

	res, err := h.Publish(Publication{Channel: "site/dash/g", Event: "e", Data: "x"})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), res.Offset)

	require.NoError(t, h.Stop(context.Background()))
	_, err = h.Publish(Publication{Channel: "site/dash/g", Event: "e", Data: "x"})
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.Less(t, time.Since(start), 10*time.Second, "something waited for the publish timeout")
}

// TestReplayFitsBesideTheQueue: a replay is recovered only if it fits the
// outbound queue together with its ack and what the client has not taken
// yet; otherwise the client gets recovered:false (refetch) and stays
// connected, rather than being cut off with 4008.
func TestReplayFitsBesideTheQueue(t *testing.T) {
	h := newTestHub(t, func(cfg *Config) { cfg.SendQueueMessages, cfg.SendQueueBytes = 4, 1000 })
	defer func() { _ = h.Stop(t.Context()) }()
	frame := make([]byte, 99) // 100 bytes queued with its newline
	frames := func(n int) [][]byte {
		fs := make([][]byte, n)
		for i := range fs {
			fs[i] = frame
		}
		return fs
	}
	ack := func(recovered bool) []byte { return fmt.Appendf(nil, "ack %v", recovered) }
	queued := func(o *outbox) (frames int, first, last string, closed bool) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if len(o.parts) > 0 {
			first, last = string(o.parts[0]), string(o.parts[len(o.parts)-1])
		}
		return o.frames, first, last, o.closed
	}
	// behind returns an outbox whose client has one write in flight, stuck,
	// and n frames queued after it. The 4008 it may be told goes to dead
	// letters.
	stuck := &stuckSocket{release: make(chan struct{})}
	defer close(stuck.release)
	behind := func(n int) *outbox {
		o := newOutbox(h.cfg, stuck, actor.NewPID("nonhost", "gone"))
		o.push(frame, 0, true)
		o.flush()
		for range n {
			o.push(frame, 0, true)
		}
		return o
	}

	o := newOutbox(h.cfg, &recordingSocket{}, nil)
	recovered, kick := o.pushSubscribed(ack, true, frames(3))
	assert.True(t, recovered, "three messages and the ack fit four frames")
	assert.True(t, kick)
	n, first, _, _ := queued(o)
	assert.Equal(t, 4, n)
	assert.Equal(t, "ack true", first)

	o = newOutbox(h.cfg, &recordingSocket{}, nil)
	recovered, _ = o.pushSubscribed(ack, true, frames(4))
	assert.False(t, recovered, "four messages and the ack do not")
	n, _, last, _ := queued(o)
	assert.Equal(t, 1, n, "the ack alone")
	assert.Equal(t, "ack false", last)

	o = behind(2)
	recovered, _ = o.pushSubscribed(ack, true, frames(2))
	assert.False(t, recovered, "fits an empty queue, not this client's")
	n, _, last, closed := queued(o)
	assert.Equal(t, 3, n, "the queued messages and the ack")
	assert.Equal(t, "ack false", last)
	assert.False(t, closed, "told to refetch, not cut off")

	o = newOutbox(h.cfg, &recordingSocket{}, nil)
	recovered, _ = o.pushSubscribed(ack, true, [][]byte{})
	assert.True(t, recovered, "nothing to replay: up to date")
	recovered, _ = o.pushSubscribed(ack, false, nil)
	assert.False(t, recovered, "epoch changed or history gone")
	n, _, last, _ = queued(o)
	assert.Equal(t, 2, n)
	assert.Equal(t, "ack false", last)

	o = behind(4)
	recovered, kick = o.pushSubscribed(ack, true, nil)
	assert.False(t, recovered || kick)
	_, _, _, closed = queued(o)
	assert.True(t, closed, "not even the ack fits: a slow consumer")
}

// TestServerBacklogIsNotTheClients: frames the server has queued but not
// yet offered to the socket (a channel in mid-burst, a batch request
// waiting for its last channel) do not count against the client. When they
// would pass the bound they are written first; a client behind its socket
// still meets it.
func TestServerBacklogIsNotTheClients(t *testing.T) {
	h := newTestHub(t, func(cfg *Config) { cfg.SendQueueMessages, cfg.SendQueueBytes = 4, 1<<20 })
	defer func() { _ = h.Stop(t.Context()) }()
	sock := &recordingSocket{}
	o := newOutbox(h.cfg, sock, actor.NewPID("nonhost", "gone"))
	for i := range 10 {
		o.push([]byte{byte('0' + i)}, 0, true)
	}
	o.flush() // the pusher that kicked it, at the end of its burst
	assert.False(t, o.closed, "a client whose socket takes every write")
	assert.Equal(t, []string{"0\n1\n2\n3", "4\n5\n6\n7", "8\n9"}, sock.writes)

	stuck := &stuckSocket{release: make(chan struct{})}
	defer close(stuck.release)
	o = newOutbox(h.cfg, stuck, actor.NewPID("nonhost", "gone"))
	o.push([]byte("in flight"), 0, true)
	o.flush()
	for i := range 4 {
		require.False(t, o.push([]byte{byte('0' + i)}, 0, true), "queued behind the write: no kick")
	}
	o.push([]byte("one too many"), 0, true)
	o.mu.Lock()
	defer o.mu.Unlock()
	assert.True(t, o.closed, "a client behind its socket is still cut off")
}

// TestQueueBehindAFlushIsNotTheClients: frames that other channels queue
// while a write that does not block is under way wait for it to take them,
// rather than cut off a client whose socket takes every write. Here the
// write is slow (a loaded machine) and the queue holds two frames.
func TestQueueBehindAFlushIsNotTheClients(t *testing.T) {
	h := newTestHub(t, func(cfg *Config) { cfg.SendQueueMessages, cfg.SendQueueBytes = 2, 1<<20 })
	defer func() { _ = h.Stop(t.Context()) }()
	sock := &slowTrySocket{entered: make(chan struct{}, 1), release: make(chan struct{})}
	o := newOutbox(h.cfg, sock, actor.NewPID("nonhost", "gone"))
	require.True(t, o.push([]byte("a"), 0, true))
	flushed := make(chan struct{})
	go func() { defer close(flushed); o.flush() }()
	<-sock.entered // the flush is writing "a"
	o.push([]byte("b"), 0, true)
	o.push([]byte("c"), 0, true)
	pushed := pushIntoAFullQueue(t, o, "d") // no room until the flush takes the queue
	close(sock.release)
	<-pushed
	<-flushed
	o.mu.Lock()
	defer o.mu.Unlock()
	assert.False(t, o.closed, "a client whose socket takes every write")
	assert.Equal(t, []string{"a", "b\nc", "d"}, sock.writes)
}

// TestQueueBehindAWriterIsNotTheClients: as TestQueueBehindAFlush..., for
// a writer goroutine (here started for a ping): what it offers without
// blocking and the socket takes at once does not wait for the client, so
// the frames queued behind it wait for it too rather than cut the client
// off with 4008.
func TestQueueBehindAWriterIsNotTheClients(t *testing.T) {
	h := newTestHub(t, func(cfg *Config) { cfg.SendQueueMessages, cfg.SendQueueBytes = 2, 1<<20 })
	defer func() { _ = h.Stop(t.Context()) }()
	sock := &slowTrySocket{entered: make(chan struct{}, 1), release: make(chan struct{})}
	sock.pinging, sock.pinged = make(chan struct{}), make(chan struct{})
	o := newOutbox(h.cfg, sock, actor.NewPID("nonhost", "gone"))
	o.push([]byte("a"), 0, true)
	assert.False(t, o.requestControl(control{ping: true}), "kicked already, by a")
	o.flush() // the ping goes to a writer goroutine, with "a"
	<-sock.pinging
	o.push([]byte("b"), 0, true) // its next batch, offered without blocking
	close(sock.pinged)
	select {
	case <-sock.entered: // the writer is writing "b"
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not offer b without blocking")
	}
	o.push([]byte("c"), 0, true)
	o.push([]byte("d"), 0, true)
	pushed := pushIntoAFullQueue(t, o, "e") // no room until the writer takes the queue
	close(sock.release)
	<-pushed
	require.Eventually(t, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.state == idle
	}, 10*time.Second, time.Millisecond, "everything written")
	o.mu.Lock()
	defer o.mu.Unlock()
	assert.False(t, o.closed, "a client whose socket takes every write")
	sock.mu.Lock()
	defer sock.mu.Unlock()
	assert.Equal(t, []string{"a", "b", "c\nd", "e"}, sock.writes)
}

// pushIntoAFullQueue pushes frame from a goroutine of its own, flushing
// it if the push kicked the outbox, and returns once that push waits for
// room or was refused; pushed is closed when the push is done.
func pushIntoAFullQueue(t *testing.T, o *outbox, frame string) (pushed <-chan struct{}) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if o.push([]byte(frame), 0, true) { // after the writing went idle
			o.flush()
		}
	}()
	require.Eventually(t, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.waiters == 1 || o.closed
	}, 10*time.Second, time.Millisecond, "the push waits or is refused")
	return done
}

// slowTrySocket takes every write whole, but its first TryWrite waits
// until release is closed: a write that does not block, on a machine slow
// to run it.
type slowTrySocket struct {
	recordingSocket
	entered chan struct{}
	release chan struct{}
	// pinging, when not nil, is closed as a ping is written, which then
	// waits for pinged to be closed.
	pinging, pinged chan struct{}
}

func (s *slowTrySocket) WritePong([]byte) error { return nil }

func (s *slowTrySocket) WritePing() error {
	if s.pinging != nil {
		close(s.pinging)
		<-s.pinged
	}
	return nil
}

func (s *slowTrySocket) TryWrite(parts [][]byte) (taken, done bool, err error) {
	select {
	case s.entered <- struct{}{}:
		<-s.release
	default:
	}
	return s.recordingSocket.TryWrite(parts)
}

// TestBatchHoldsOutboxesBriefly: a batch request writes what its fast
// channels queued after maxBatchHold, without waiting for a channel that
// is stuck (here in mid-fan-out until the test lets it go).
func TestBatchHoldsOutboxesBriefly(t *testing.T) {
	release := make(chan struct{})
	stuck := "site/dash/stuck"
	h := newTestHub(t, func(cfg *Config) {
		cfg.PublishTimeout = time.Minute // so that only the hold can end the wait
		cfg.BeforeDeliverForTest = func(channel string, _ uint64, _ int) {
			if channel == stuck {
				<-release
			}
		}
	})
	defer func() { _ = h.Stop(t.Context()) }()
	letGo := sync.OnceFunc(func() { close(release) })
	defer letGo() // before Stop, which waits for the stuck channel

	claims := auth.Claims{Subject: "a", Site: "site", Dash: "dash", Role: auth.RoleSubscribe, ExpiresAt: time.Now().Add(time.Hour)}
	var fast, slow recordingSocket
	for ch, sock := range map[string]*recordingSocket{"site/dash/fast": &fast, stuck: &slow} {
		c := h.Connect(ConnParams{Claims: claims, Socket: sock})
		c.Text(subFrame(1, ch))
	}
	written := func(s *recordingSocket) int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.writes)
	}
	require.Eventually(t, func() bool { return written(&fast) == 1 && written(&slow) == 1 },
		10*time.Second, time.Millisecond, "acks written")

	done := make(chan struct{})
	go func() {
		defer close(done)
		h.PublishBatch([]Publication{
			{Channel: "site/dash/fast", Event: "e", Data: "x"},
			{Channel: stuck, Event: "e", Data: "x"},
		})
	}()
	// That the two are written together when both answer in time is
	// edge's TestBatchIsOneFramePerConnection.
	require.Eventually(t, func() bool { return written(&fast) == 2 },
		10*time.Second, time.Millisecond, "the fast channel's message written while the other channel is stuck")
	letGo()
	<-done
	require.Eventually(t, func() bool { return written(&slow) == 2 },
		10*time.Second, time.Millisecond, "the stuck channel's message written once it went on")
}

// TestBatchHeldBehindAFlush: a batch reaches a connection in one write
// even when a flush of the connection's outbox is under way as the batch's
// first messages come: the flush leaves them to the batch's request rather
// than writing the part that has come so far. Here the flush's write has
// returned (the client has it) but its goroutine waits, as on a loaded
// machine, while two of the batch's three channels queue, and goes on
// before the third.
func TestBatchHeldBehindAFlush(t *testing.T) {
	last := "site/dash/last"
	lastReached, releaseLast := make(chan struct{}), make(chan struct{})
	h := newTestHub(t, func(cfg *Config) {
		cfg.PublishTimeout, cfg.BatchHold = time.Minute, time.Minute // only the last answer writes
		cfg.BeforeDeliverForTest = func(channel string, _ uint64, _ int) {
			if channel == last {
				close(lastReached)
				<-releaseLast
			}
		}
	})
	defer func() { _ = h.Stop(t.Context()) }()
	letGo := sync.OnceFunc(func() { close(releaseLast) })
	defer letGo() // before Stop, which waits for the last channel
	sock := &gatedSocket{entered: make(chan struct{}), release: make(chan struct{})}
	openGate := sync.OnceFunc(func() { close(sock.release) })
	defer openGate()
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal(what)
		}
	}
	// perWrite counts, in each write so far, the frames that contain s.
	perWrite := func(s string) []int {
		sock.mu.Lock()
		defer sock.mu.Unlock()
		var n []int
		for _, w := range sock.writes {
			c := 0
			for f := range strings.SplitSeq(w, "\n") {
				if strings.Contains(f, s) {
					c++
				}
			}
			n = append(n, c)
		}
		return n
	}
	total := func(s string) (n int) {
		for _, c := range perWrite(s) {
			n += c
		}
		return n
	}

	claims := auth.Claims{Subject: "a", Site: "site", Dash: "dash", Role: auth.RoleSubscribe, ExpiresAt: time.Now().Add(time.Hour)}
	c := h.Connect(ConnParams{Claims: claims, Socket: sock})
	batch := []string{"site/dash/b0", "site/dash/b1", last}
	for i, ch := range append([]string{"site/dash/other"}, batch...) {
		c.Text(subFrame(uint64(i+1), ch))
	}
	require.Eventually(t, func() bool { return total(`"site/dash/`) == 4 }, 10*time.Second, time.Millisecond, "acks written")
	o := h.cfg.outboxes.lookup(c.pid.Id)
	require.NotNil(t, o)

	// A message of another channel: its flush writes it, then waits.
	sock.armed.Store(true)
	_, err := h.Publish(Publication{Channel: "site/dash/other", Event: "e", Data: "x"})
	require.NoError(t, err)
	wait(sock.entered, "the flush did not write")

	published := make(chan struct{})
	go func() {
		defer close(published)
		var ps []Publication
		for _, ch := range batch {
			ps = append(ps, Publication{Channel: ch, Event: "batch", Data: "x"})
		}
		_, errs := h.PublishBatch(ps)
		for _, err := range errs {
			assert.NoError(t, err)
		}
	}()
	wait(lastReached, "the last channel did not deliver")
	require.Eventually(t, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.msgs == 2
	}, 10*time.Second, time.Millisecond, "the first two channels queued behind the flush")

	openGate()
	require.Eventually(t, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.state != flushing && o.state != writing
	}, 10*time.Second, time.Millisecond, "the flush went on")
	letGo()
	wait(published, "the batch was not answered")
	require.Eventually(t, func() bool { return total(`"event":"batch"`) == 3 }, 10*time.Second, time.Millisecond, "the batch written")
	var batches []int
	for _, n := range perWrite(`"event":"batch"`) {
		if n > 0 {
			batches = append(batches, n)
		}
	}
	assert.Equal(t, []int{3}, batches, "one write carries the whole batch")
}

// gatedSocket is a recordingSocket whose first TryWrite once armed waits,
// after the write, until release is closed: a flush whose write the client
// has, on a goroutine the scheduler then leaves waiting.
type gatedSocket struct {
	recordingSocket
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *gatedSocket) TryWrite(parts [][]byte) (taken, done bool, err error) {
	taken, done, err = s.recordingSocket.TryWrite(parts)
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return taken, done, err
}

// TestCrashReleasesHolds: a channel that crashes in mid-fan-out of a
// batch's message, after it held some of its subscribers' outboxes for the
// request, releases them on its restart: they are written (the message,
// then the reset), not held forever.
func TestCrashReleasesHolds(t *testing.T) {
	crash := "site/dash/crash"
	var crashed atomic.Bool
	h := newTestHub(t, func(cfg *Config) {
		cfg.PublishTimeout = time.Second
		cfg.BeforeDeliverForTest = func(channel string, _ uint64, i int) {
			if channel == crash && i == 1 && crashed.CompareAndSwap(false, true) {
				panic("crash in mid-fan-out")
			}
		}
	})
	defer func() { _ = h.Stop(t.Context()) }()
	claims := auth.Claims{Subject: "a", Site: "site", Dash: "dash", Role: auth.RoleSubscribe, ExpiresAt: time.Now().Add(time.Hour)}
	var socks [2]recordingSocket
	for i := range socks {
		c := h.Connect(ConnParams{Claims: claims, Socket: &socks[i]})
		c.Text(subFrame(1, crash))
	}
	written := func(s *recordingSocket, what string) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, w := range s.writes {
			if strings.Contains(w, what) {
				return true
			}
		}
		return false
	}
	require.Eventually(t, func() bool { return written(&socks[0], `"ack"`) && written(&socks[1], `"ack"`) },
		10*time.Second, time.Millisecond, "acks written")

	h.PublishBatch([]Publication{{Channel: crash, Event: "batch", Data: "x"}, {Channel: "site/dash/other", Event: "batch", Data: "x"}})
	require.True(t, crashed.Load())
	// The first subscriber in the channel's order (either socket: they
	// subscribed concurrently) had its outbox held; a held outbox would
	// not write the reset either.
	assert.Eventually(t, func() bool { return written(&socks[0], `"reset"`) && written(&socks[1], `"reset"`) },
		10*time.Second, time.Millisecond, "both written after the restart")
	assert.NotEqual(t, written(&socks[0], `"event":"batch"`), written(&socks[1], `"event":"batch"`),
		"the held outbox wrote the message it held, the other never got it")
}

// subFrame is a client's subscribe frame, as the edge passes it on.
func subFrame(id uint64, channel string) []byte {
	return append(protocol.AppendString(fmt.Appendf(nil, `{"op":"sub","id":%d,"ch":`, id), channel), '}')
}
