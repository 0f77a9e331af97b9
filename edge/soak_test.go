package edge_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/protocol"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// soakParams size one soak run.
type soakParams struct {
	conns, channels, publishers int
	// publishRate is the total publishes per second.
	publishRate float64
	duration    time.Duration
	// maxSubs is how many channels one client subscribes at most at once.
	maxSubs int
}

// soakParamsFromEnv returns the short soak that make test runs, or the long
// one when REALTIME_SOAK=1 (make soak); REALTIME_SOAK_CONNS and
// REALTIME_SOAK_DURATION override the size of either.
func soakParamsFromEnv(t *testing.T) soakParams {
	p := soakParams{conns: 200, channels: 20, publishers: 4, publishRate: 300, duration: 5 * time.Second, maxSubs: 4}
	if os.Getenv("REALTIME_SOAK") == "1" {
		p = soakParams{conns: 2000, channels: 200, publishers: 8, publishRate: 2000, duration: 3 * time.Minute, maxSubs: 6}
	}
	if v := os.Getenv("REALTIME_SOAK_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "REALTIME_SOAK_CONNS")
		p.conns = n
	}
	if v := os.Getenv("REALTIME_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "REALTIME_SOAK_DURATION")
		p.duration = d
	}
	return p
}

// TestSoak runs many clients that subscribe, unsubscribe and reconnect with
// since while publishers publish concurrently. Every subscription must see
// contiguous offsets: from since+1 when recovered, from the ack's offset+1
// otherwise, with nothing skipped or repeated, up to the last message
// published. When everyone has left, the relay is back where it started:
// no connections, subscriptions or channels, and its goroutines and heap
// near the baseline.
func TestSoak(t *testing.T) {
	p := soakParamsFromEnv(t)
	// A short retention lets idle channels passivate soon: during the run
	// that exercises new epochs (recovered:false), at the end it empties
	// the relay.
	const retention = 2 * time.Second
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.Actors.History.Retention = retention
	})
	sub, pub := r.SubscribeToken(t), r.PublishToken(t)
	channels := make([]string, p.channels)
	for i := range channels {
		channels[i] = testutil.Channel("soak-" + strconv.Itoa(i))
	}
	baseGoroutines := serverGoroutines()
	baseHeap := heapBytes()

	f := &soakFailures{}
	clients := make([]*soakClient, p.conns)
	for i := range clients {
		clients[i] = &soakClient{r: r, token: sub, failures: f, channels: channels, maxSubs: p.maxSubs,
			all: clients, rng: rand.New(rand.NewPCG(uint64(i), 42)), pos: make(map[string]soakPos)}
	}
	stop := make(chan struct{})
	var drivers, publishers sync.WaitGroup
	for _, c := range clients {
		drivers.Go(func() { c.drive(stop, p.duration) })
	}
	var published, pubNanos atomic.Int64
	stopPublishing := make(chan struct{})
	for i := range p.publishers {
		publishers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			tick := time.NewTicker(time.Duration(float64(time.Second) * float64(p.publishers) / p.publishRate))
			defer tick.Stop()
			for {
				select {
				case <-stopPublishing:
					return
				case <-tick.C:
				}
				ch := channels[rng.IntN(len(channels))]
				t0 := time.Now()
				_, err := r.TryPublish(pub, testutil.Publication{Channel: ch, Event: "Soak", Data: "payload"})
				pubNanos.Add(int64(time.Since(t0)))
				if err != nil {
					f.add("publish: %v", err)
					continue
				}
				published.Add(1)
			}
		})
	}
	time.AfterFunc(p.duration, func() { close(stop) })
	drivers.Wait()
	close(stopPublishing)
	publishers.Wait()
	require.True(t, f.empty(), "failures during the run:\n%s", f)

	// Every request answered; then one last message per channel, whose
	// offset every subscriber of that channel must reach.
	require.Eventually(t, func() bool {
		for _, c := range clients {
			if c.pendingCount() > 0 {
				return false
			}
		}
		return true
	}, testutil.Wait, 10*time.Millisecond, "requests without an answer")
	final := make(map[string]testutil.Published, len(channels))
	for _, ch := range channels {
		final[ch] = r.PublishOne(t, pub, testutil.Publication{Channel: ch, Event: "Final", Data: "last"})
	}
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		for i, c := range clients {
			c.checkCaughtUp(ct, i, final)
		}
	}, testutil.Wait, 20*time.Millisecond, "subscribers missed the tail of their channels")
	require.True(t, f.empty(), "failures:\n%s", f)

	var st soakStats
	for _, c := range clients {
		st.add(c.stats())
	}
	t.Logf("%d connections, %v: %d published, %d delivered, %d subs (%d recovered, %d not), %d unsubs, %d reconnects",
		p.conns, p.duration, published.Load(), st.received, st.subs, st.recovered, st.notRecovered, st.unsubs, st.reconnects)
	t.Logf("publish latency %v", time.Duration(pubNanos.Load()/max(published.Load(), 1)))
	assert.Positive(t, published.Load())
	assert.Positive(t, st.received)
	assert.Positive(t, st.recovered, "no reconnect recovered: the soak did not test recovery")
	assert.Positive(t, st.reconnects)

	// Everyone leaves.
	for _, c := range clients {
		c.leave()
	}
	r.WaitMetric(t, "realtime_connections", 0)
	r.WaitMetric(t, "realtime_subscriptions", 0)
	r.WaitMetric(t, "realtime_channels", 0) // passivated once the retention passed
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	require.Eventually(t, func() bool { return serverGoroutines() <= baseGoroutines+10 }, testutil.Wait, 50*time.Millisecond,
		"goroutines: %d at start, %d after everyone left", baseGoroutines, serverGoroutines())
	heap := heapBytes()
	t.Logf("heap: %d KiB at start, %d KiB after everyone left", baseHeap>>10, heap>>10)
	// Slack for the runtime; for protoactor's process registry, whose
	// 1024x32 Go maps are allocated on first use and stay (~10 MiB once
	// every one has held a PID); and for maps that keep the size of their
	// peak (the server's connection set).
	slack := int64(14<<20 + p.conns*(4<<10))
	assert.Less(t, int64(heap)-int64(baseHeap), slack, "heap did not come back near its baseline")
}

// serverGoroutines counts the goroutines of the process, leaving out idle
// fasthttp workers: the worker pool keeps them for its idle duration (10s)
// by design, and they hold nothing of a connection.
func serverGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.HasPrefix(g, "goroutine ") {
			continue
		}
		if idleWorker(g) {
			continue
		}
		count++
	}
	return count
}

func idleWorker(stack string) bool {
	head, _, _ := strings.Cut(stack, "\n")
	if !strings.Contains(head, "[chan receive") {
		return false
	}
	for line := range strings.SplitSeq(stack, "\n") {
		if strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "goroutine ") || strings.HasPrefix(line, "runtime.") {
			continue
		}
		return strings.HasPrefix(line, "github.com/valyala/fasthttp.(*workerPool).workerFunc(")
	}
	return false
}

// soakFailures collects what went wrong on any goroutine; the test
// goroutine reports them.
type soakFailures struct {
	mu   sync.Mutex
	list []string
	n    int
}

func (f *soakFailures) add(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if len(f.list) < 20 {
		f.list = append(f.list, fmt.Sprintf(format, args...))
	}
}

func (f *soakFailures) empty() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n == 0
}

func (f *soakFailures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%d failures, the first:\n%s", f.n, strings.Join(f.list, "\n"))
}

type soakStats struct {
	received, subs, recovered, notRecovered, unsubs, reconnects int
}

func (s *soakStats) add(o soakStats) {
	s.received += o.received
	s.subs += o.subs
	s.recovered += o.recovered
	s.notRecovered += o.notRecovered
	s.unsubs += o.unsubs
	s.reconnects += o.reconnects
}

// soakPos is the last message a client processed on a channel.
type soakPos struct {
	epoch  string
	offset uint64
}

type subState uint8

const (
	subPending   subState = iota + 1 // sub sent, no ack yet
	subActive                        // acked; next is the offset expected
	unsubPending                     // unsub sent, no ack yet
)

type soakSub struct {
	state subState
	since *soakPos // what the sub asked to recover from
	epoch string
	next  uint64
}

type soakReq struct {
	op string
	ch string
}

// soakClient is one simulated browser gadget host. Its driver goroutine
// decides what to do; its connection's read goroutine checks every frame.
type soakClient struct {
	// Static.
	r        *testutil.Relay
	token    string
	failures *soakFailures
	channels []string
	maxSubs  int
	all      []*soakClient // every client of the run, for its size
	rng      *rand.Rand    // driver goroutine only

	mu sync.Mutex
	// Guarded by mu.
	conn    *gws.Conn
	gen     uint64 // bumped when the client drops its connection
	subs    map[string]*soakSub
	pending map[uint64]soakReq
	nextID  uint64
	pos     map[string]soakPos // survives unsubscribes and reconnects
	st      soakStats
}

// drive acts every few tens of milliseconds until stop: subscribe with
// since, unsubscribe, or drop the connection and reconnect.
func (c *soakClient) drive(stop <-chan struct{}, duration time.Duration) {
	// Spread the first dials over a tenth of the run.
	first := time.NewTimer(time.Duration(c.rng.Int64N(int64(duration / 10))))
	select {
	case <-stop:
		first.Stop()
		return
	case <-first.C:
	}
	if !c.connect(nil) {
		return
	}
	// Each client acts every 20-60ms per 200 clients, so that the total
	// request rate, and with it the CPU a -race run needs, does not grow
	// with the number of connections.
	scale := time.Duration(max(1, len(c.all)/200))
	tick := time.NewTicker(scale * time.Duration(20+c.rng.IntN(40)) * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		switch n := c.rng.IntN(100); {
		case n < 40:
			c.subscribeRandom()
		case n < 60:
			c.unsubscribeRandom()
		case n < 64:
			if !c.reconnect() {
				return
			}
		}
	}
}

// connect dials, then subscribes to want, each with since where known.
func (c *soakClient) connect(want []string) bool {
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	conn, _, err := gws.NewClient(&soakHandler{c: c, gen: gen}, &gws.ClientOption{
		Addr: "ws://" + c.r.Addr + "/v1/ws?token=" + c.token, HandshakeTimeout: testutil.Wait,
	})
	if err != nil {
		c.failures.add("dial: %v", err)
		return false
	}
	c.mu.Lock()
	c.conn = conn
	c.subs = make(map[string]*soakSub)
	c.pending = make(map[uint64]soakReq)
	c.mu.Unlock()
	go conn.ReadLoop()
	for _, ch := range want {
		c.subscribe(ch)
	}
	return true
}

// reconnect drops the connection without unsubscribing, as a browser that
// loses its network does, and comes back asking to recover.
func (c *soakClient) reconnect() bool {
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.gen++
	var want []string
	for ch := range c.subs {
		want = append(want, ch)
	}
	c.st.reconnects++
	c.mu.Unlock()
	_ = conn.NetConn().Close()
	return c.connect(want)
}

// leave closes the connection for good.
func (c *soakClient) leave() {
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.gen++
	c.mu.Unlock()
	if conn != nil {
		_ = conn.WriteClose(1000, nil)
		_ = conn.NetConn().Close()
	}
}

func (c *soakClient) subscribeRandom() {
	c.mu.Lock()
	n := len(c.subs)
	c.mu.Unlock()
	if n >= c.maxSubs {
		return
	}
	ch := c.channels[c.rng.IntN(len(c.channels))]
	c.mu.Lock()
	_, busy := c.subs[ch]
	c.mu.Unlock()
	if !busy {
		c.subscribe(ch)
	}
}

func (c *soakClient) subscribe(ch string) {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	s := &soakSub{state: subPending}
	frame := `{"op":"sub","id":` + u(id) + `,"ch":` + quoteJSON(ch)
	if p, ok := c.pos[ch]; ok {
		s.since = &p
		frame += `,"since":{"epoch":` + quoteJSON(p.epoch) + `,"offset":` + u(p.offset) + `}`
	}
	c.subs[ch] = s
	c.pending[id] = soakReq{op: "sub", ch: ch}
	c.st.subs++
	conn := c.conn
	c.mu.Unlock()
	c.send(conn, frame+"}")
}

func (c *soakClient) unsubscribeRandom() {
	c.mu.Lock()
	var active []string
	for ch, s := range c.subs {
		if s.state == subActive {
			active = append(active, ch)
		}
	}
	if len(active) == 0 {
		c.mu.Unlock()
		return
	}
	ch := active[c.rng.IntN(len(active))]
	c.subs[ch].state = unsubPending
	c.nextID++
	id := c.nextID
	c.pending[id] = soakReq{op: "unsub", ch: ch}
	c.st.unsubs++
	conn := c.conn
	c.mu.Unlock()
	c.send(conn, `{"op":"unsub","id":`+u(id)+`,"ch":`+quoteJSON(ch)+`}`)
}

func (c *soakClient) send(conn *gws.Conn, frame string) {
	if err := conn.WriteString(frame); err != nil {
		c.failures.add("send: %v", err)
	}
}

// soakHandler receives the events of one connection of a client; gen tells
// its frames from those of a connection the client has since dropped.
type soakHandler struct {
	c   *soakClient
	gen uint64
}

func (h *soakHandler) OnOpen(*gws.Conn) {}

func (h *soakHandler) OnClose(_ *gws.Conn, err error) {
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.gen != c.gen {
		return // the client closed it
	}
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.failures.add("server closed the connection with %d", ce.Code)
	} else {
		c.failures.add("connection lost: %v", err)
	}
}

func (h *soakHandler) OnPing(conn *gws.Conn, p []byte) { _ = conn.WritePong(p) }
func (h *soakHandler) OnPong(*gws.Conn, []byte)        {}

func (h *soakHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	frames, err := protocol.SplitServerFrames(m.Bytes())
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.gen != c.gen {
		return
	}
	if err != nil {
		c.failures.add("undecodable frame: %v", err)
		return
	}
	for _, f := range frames {
		c.handleLocked(f)
	}
}

// handleLocked checks one server frame against the client's state.
func (c *soakClient) handleLocked(f protocol.ServerFrame) {
	fail := func(format string, args ...any) {
		c.failures.add("client %p: "+format, append([]any{c}, args...)...)
	}
	switch f.Op {
	case "ack":
		if f.ID == nil {
			fail("ack without id: %+v", f)
			return
		}
		req, ok := c.pending[*f.ID]
		if !ok {
			fail("ack for no request: %+v", f)
			return
		}
		delete(c.pending, *f.ID)
		s := c.subs[req.ch]
		if req.op == "unsub" {
			if s == nil || s.state != unsubPending {
				fail("unsub ack in state %+v", s)
			}
			delete(c.subs, req.ch)
			return
		}
		if s == nil || s.state != subPending || f.Ch != req.ch || f.Recovered == nil {
			fail("sub ack %+v in state %+v", f, s)
			return
		}
		s.state, s.epoch = subActive, f.Epoch
		switch {
		case *f.Recovered:
			if s.since == nil || s.since.epoch != f.Epoch || s.since.offset > f.Offset {
				fail("recovered ack %+v for since %+v", f, s.since)
			}
			c.st.recovered++
			s.next = s.since.offset + 1
		default:
			if s.since != nil {
				c.st.notRecovered++
			}
			// The client refetches its state: it is now at the ack.
			s.next = f.Offset + 1
			c.pos[req.ch] = soakPos{f.Epoch, f.Offset}
		}
	case "msg":
		s := c.subs[f.Ch]
		switch {
		case s == nil:
			fail("msg %d on %s, not subscribed", f.Offset, f.Ch)
		case s.state == subPending:
			fail("msg %d on %s before the sub's ack", f.Offset, f.Ch)
		case f.Offset != s.next:
			fail("msg %d on %s, want %d (epoch %s)", f.Offset, f.Ch, s.next, s.epoch)
		default:
			s.next++
			c.pos[f.Ch] = soakPos{s.epoch, f.Offset}
			c.st.received++
		}
	case "err":
		fail("err %s: %s (id %v)", f.Code, f.Msg, f.ID)
	default:
		fail("unexpected frame %+v", f)
	}
}

func (c *soakClient) pendingCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// checkCaughtUp requires that every subscription has reached the final
// message of its channel.
func (c *soakClient) checkCaughtUp(ct *assert.CollectT, i int, final map[string]testutil.Published) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, s := range c.subs {
		want := final[ch]
		if !assert.Equal(ct, want.Epoch, s.epoch, "client %d, %s: epoch", i, ch) {
			continue
		}
		assert.Equal(ct, want.Offset, s.next-1, "client %d, %s: last offset", i, ch)
	}
}

func (c *soakClient) stats() soakStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// TestPassivationChurn publishes to channels that nobody subscribes, with a
// retention so short that they passivate and come back all the time: every
// publish is answered, offsets only grow within an epoch, and once the
// publishers stop every channel is freed.
func TestPassivationChurn(t *testing.T) {
	const retention = 40 * time.Millisecond // idle checks every 10ms
	const publishers, channels = 4, 8
	duration := time.Second
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.Actors.History.Retention = retention })
	pub := r.PublishToken(t)
	f := &soakFailures{}
	var epochs atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(duration)
	for i := range publishers {
		wg.Go(func() {
			last := make(map[string]testutil.Published)
			for n := 0; time.Now().Before(deadline); n++ {
				ch := testutil.Channel("churn-" + strconv.Itoa((i+n)%channels))
				res, err := r.TryPublish(pub, testutil.Publication{Channel: ch, Event: "Churn", Data: "x"})
				if err != nil {
					f.add("publish: %v", err)
					continue
				}
				prev, seen := last[ch]
				switch {
				case !seen || prev.Epoch != res.Epoch:
					epochs.Add(1)
				case res.Offset <= prev.Offset:
					f.add("%s: offset %d after %d in epoch %s", ch, res.Offset, prev.Offset, res.Epoch)
				}
				last[ch] = res
			}
		})
	}
	wg.Wait()
	require.True(t, f.empty(), "%s", f)
	t.Logf("%d epochs seen by %d publishers on %d channels", epochs.Load(), publishers, channels)
	r.WaitMetric(t, "realtime_channels", 0)
}
