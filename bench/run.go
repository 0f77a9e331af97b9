package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/realtime-relay/realtime/auth"
)

const (
	// tokenLifetime is the life of the bench's tokens: a run never lasts
	// that long, and it stays under the relay's 24h cap.
	tokenLifetime = 23 * time.Hour
	// ackTimeout bounds the wait for every sub to be answered.
	ackTimeout = 30 * time.Second
	// progressEvery is the progress line's period.
	progressEvery = time.Second
)

// run is one Run in progress. Its plain fields are owned by the goroutine
// that called Run.
type run struct {
	cfg     Config
	t       *target
	dialer  *dialer
	lat     *latencies
	ctr     counters
	closing atomic.Bool // set before the run closes its connections
	res     Result

	subs      []*subscriber // one per subscription: a group's share a connection (conns)
	channels  []string
	subsOfCh  []atomic.Int64 // live subscriptions per channel: counted by subscribeAll, ended by their reader
	published []atomic.Int64 // successful publishes per channel
	subToken  string
	pubToken  string
	firstErr  error

	// Resource snapshots.
	readyStats procStats // at ready, before any connection

	// Churn: loops is the context of the readers' reconnects, stopLoops
	// ends it (closeAll); plan is set once publishing starts and then
	// read by the readers.
	loops        context.Context
	stopLoops    context.CancelFunc
	plan         atomic.Pointer[churnPlan]
	reconnectLat *latencies
	// Slow: the subscribers that stop reading.
	stall *stall
	// pollers read the subscribers that need no goroutine of their own:
	// all but churn's (which redial), slow's stopped ones and TLS ones;
	// nil when epoll is missing.
	pollers *pollers
}

// Run runs the scenario of cfg and returns what it measured. An error
// means the run could not be carried out (the relay did not start, no
// connection could be opened); a run that was carried out but failed its
// checks returns a Result whose Failures say why. With cfg.Baseline it then
// runs the same scenario against the physical baseline (ServeBaseline).
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	res, err := runAgainst(ctx, cfg, startTarget)
	if err != nil || !cfg.Baseline {
		return res, err
	}
	base, err := runAgainst(ctx, cfg, startBaseline)
	if err != nil {
		return res, fmt.Errorf("bench: baseline: %w", err)
	}
	base.Target = "baseline"
	res.Baseline = &base
	res.Ratio = ratioOf(&res, &base)
	return res, nil
}

// runAgainst runs cfg's scenario against the target start returns.
func runAgainst(ctx context.Context, cfg Config, start func(context.Context, *Config) (*target, error)) (Result, error) {
	r := &run{cfg: cfg, lat: newLatencies(4 * runtime.GOMAXPROCS(0)), reconnectLat: newLatencies(runtime.GOMAXPROCS(0))}
	r.res = Result{Scenario: cfg.Scenario, Target: "child", FDLimit: raiseFDLimit()}
	if cfg.URL != "" {
		r.res.Target = cfg.URL
	}
	t, err := start(ctx, &r.cfg)
	if err != nil {
		return Result{}, err
	}
	r.t = t
	if cfg.Progress != nil && t.cmd != nil {
		fmt.Fprintf(cfg.Progress, "%s: pid %d, %s, admin %s\n", t.name, t.cmd.Process.Pid, t.base, t.adminURL)
	}
	r.dialer = newDialer(t.base, cfg.RootCAs, cfg.SourceAddrs, defaultDialTimeout)
	r.readyStats, _ = t.stats()
	if err := r.mintTokens(); err != nil {
		_ = t.stop()
		return Result{}, err
	}
	if cfg.Scenario != ScenarioChurn {
		r.pollers = newPollers()
	}

	switch cfg.Scenario {
	case ScenarioConnect:
		err = r.connect(ctx)
	case ScenarioFanout:
		err = r.fanout(ctx)
	case ScenarioRamp:
		err = r.ramp(ctx)
	case ScenarioChurn:
		err = r.churn(ctx)
	case ScenarioSlow:
		err = r.slow(ctx)
	}
	r.closeAll()
	if r.pollers != nil {
		r.pollers.stop()
	}
	if serr := t.stop(); serr != nil {
		r.res.Failures = append(r.res.Failures, serr.Error())
	}
	if ctx.Err() != nil {
		// Interrupted (a signal): the phases were cut short, so their
		// rates and checks describe no run of the requested shape.
		err = fmt.Errorf("bench: interrupted: %w", ctx.Err())
	}
	if err != nil {
		return r.res, err
	}
	if r.firstErr != nil {
		r.res.FirstError = r.firstErr.Error()
	}
	r.judge()
	return r.res, nil
}

// mintTokens mints the subscribe token every connection shares (one
// dashboard holds every bench channel) and the publish token.
func (r *run) mintTokens() error {
	var id [4]byte
	_, _ = rand.Read(id[:])
	dash := "bench-" + hex.EncodeToString(id[:])
	now := time.Now()
	sub, err := auth.Mint(r.t.key, auth.Claims{Subject: "bench", Site: r.cfg.Site, Dash: dash,
		Role: auth.RoleSubscribe, IssuedAt: now, ExpiresAt: now.Add(tokenLifetime)})
	if err != nil {
		return fmt.Errorf("bench: minting the subscribe token: %w", err)
	}
	pub, err := auth.Mint(r.t.key, auth.Claims{Subject: "bench", Site: r.cfg.Site,
		Role: auth.RolePublish, IssuedAt: now, ExpiresAt: now.Add(tokenLifetime)})
	if err != nil {
		return fmt.Errorf("bench: minting the publish token: %w", err)
	}
	r.subToken, r.pubToken = sub, pub
	r.channels = make([]string, r.cfg.Channels)
	for i := range r.channels {
		r.channels[i] = fmt.Sprintf("%s/%s/g%d", r.cfg.Site, dash, i)
	}
	r.subsOfCh = make([]atomic.Int64, r.cfg.Channels)
	r.published = make([]atomic.Int64, r.cfg.Channels)
	return nil
}

// dialAll opens n connections at the configured concurrency; channelOf
// gives each connection's channel (-1: none). It stops at the first
// failure, which it records, and returns how long dialing took.
func (r *run) dialAll(ctx context.Context, n int, channelOf func(int) int) time.Duration {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		next  atomic.Int64
		wg    sync.WaitGroup
		slots = make([]*subscriber, n)
	)
	start := time.Now()
	for range min(r.cfg.Concurrency, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				s, err := r.dialOne(ctx, i, channelOf(i))
				if err != nil {
					mu.Lock()
					if ctx.Err() == nil { // the first failure, not its echoes
						r.res.ConnectErrors++
						r.noteErr(fmt.Errorf("connection %d: %w", i, err))
						r.res.StoppedBy = r.classify(err)
						cancel()
					}
					mu.Unlock()
					return
				}
				slots[i] = s
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	for _, s := range slots {
		if s != nil {
			r.subs = append(r.subs, s.group...)
		}
	}
	return took
}

// dialOne opens connection i, subscribes it to channel ch and the
// Gadgets-1 after it (unless ch < 0) and starts its reader. It returns the
// subscriber of ch, whose group holds all of the connection's.
func (r *run) dialOne(ctx context.Context, i, ch int) (*subscriber, error) {
	// Slow stops the same share of every channel's subscribers: the j-th
	// of channel ch is connection ch + j*Channels.
	slow := r.stall != nil && ch >= 0 && r.cfg.isSlow(i/r.cfg.Channels)
	c, err := r.dialer.dial(ctx, i, r.subToken, slow)
	if err != nil {
		return nil, err
	}
	k := 1
	if ch >= 0 {
		k = r.cfg.Gadgets
	}
	group := make([]*subscriber, k)
	for j := range group {
		group[j] = &subscriber{conn: c, n: i, channel: ch, lat: r.lat, ctr: &r.ctr, closing: &r.closing,
			acked: make(chan struct{}), done: make(chan struct{}), group: group}
		if ch >= 0 {
			group[j].channel = ch + j
			group[j].live = &r.subsOfCh[ch+j]
		}
	}
	s := group[0]
	if slow {
		s.stall, s.lat = r.stall, nil
	}
	for j := 0; ch >= 0 && j < k; j++ {
		// Written before the reader starts, which then owns every write.
		if err := c.writeFrame(opText, subFrame(j+1, r.channels[ch+j])); err != nil {
			_ = c.nc.Close()
			return nil, err
		}
	}
	r.ctr.open.Add(1)
	s.polled = r.pollers != nil && s.stall == nil && c.rc != nil // churn has no pollers
	switch {
	case r.loops != nil:
		go r.churnLoop(r.loops, s)
	case s.polled:
		r.pollers.add(s)
	default:
		go s.readLoop()
	}
	return s, nil
}

// classify says what stopped dialing, when it was not the relay.
func (r *run) classify(err error) string {
	var ue upgradeError
	switch {
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return fmt.Sprintf("the load generator's open-file limit (%d; raise the hard limit, ulimit -Hn)", r.res.FDLimit)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "ephemeral ports ran out (more --source-addrs, or a wider net.ipv4.ip_local_port_range)"
	case errors.As(err, &ue) && ue.status == http.StatusServiceUnavailable:
		return "" // the relay's own connection limit or drain: the relay's answer
	}
	if s, ok := r.t.stats(); ok && s.fdLimit > 0 && s.fds >= s.fdLimit-8 {
		return fmt.Sprintf("the relay process's open-file limit (%d of %d fds in use)", s.fds, s.fdLimit)
	}
	return ""
}

func (r *run) noteErr(err error) {
	if r.firstErr == nil {
		r.firstErr = err
	}
}

// closeAll closes every connection and waits for the readers. Calling it
// again does nothing more.
func (r *run) closeAll() {
	r.closing.Store(true)
	if r.stopLoops != nil {
		r.stopLoops() // churn: no more reconnects
	}
	if r.stall != nil {
		r.stall.release() // slow: a stopped reader must see its close
	}
	for _, s := range r.subs {
		if s.group[0] != s {
			continue // its connection is its group's first's
		}
		s.connMu.Lock()
		if s.polled {
			s.conn.shutdown()
		} else {
			s.conn.close()
		}
		s.connMu.Unlock()
	}
	for _, s := range r.subs {
		<-s.done
	}
}

// connect opens Conns idle connections, holds them, and measures memory.
// Server and loadgen CPU cover the dialing, where connecting costs.
func (r *run) connect(ctx context.Context) error {
	n := r.cfg.Conns
	stop := r.startProgress()
	cpu0 := selfCPU()
	took := r.dialAll(ctx, n, func(int) int { return -1 })
	dialed, _ := r.t.stats()
	r.res.LoadgenCPUSeconds = (selfCPU() - cpu0).Seconds()
	r.res.Conns = r.conns()
	if r.conns() == 0 {
		stop()
		return fmt.Errorf("bench: no connection could be opened: %w", r.firstErr)
	}
	r.res.ConnectsPerSec = float64(r.conns()) / took.Seconds()
	select {
	case <-ctx.Done():
	case <-time.After(r.cfg.Hold):
	}
	stop()
	r.res.Seconds = r.cfg.Hold.Seconds()
	if s, ok := r.t.stats(); ok {
		r.res.Server = r.serverStats(s, r.readyStats, dialed.cpu-r.readyStats.cpu)
		r.res.Server.CPUMicrosPerConn = float64((dialed.cpu - r.readyStats.cpu).Microseconds()) / float64(r.conns())
	}
	r.closeAll()
	r.res.Disconnected = int(r.ctr.readErrors.Load())
	r.collectCloses()
	return nil
}

// subscribeAll opens Subs connections per dashboard (Channels/Gadgets of
// them), each subscribed to its dashboard's Gadgets channels, and waits
// for every ack.
func (r *run) subscribeAll(ctx context.Context) error {
	k, dashes := r.cfg.Gadgets, r.cfg.dashboards()
	n := dashes * r.cfg.Subs
	stop := r.startProgress()
	took := r.dialAll(ctx, n, func(i int) int { return i % dashes * k })
	stop()
	r.res.Conns = r.conns()
	if err := ctx.Err(); err != nil {
		return err // interrupted, not stopped by anything
	}
	if r.conns() < n {
		return fmt.Errorf("bench: opened %d of %d subscriber connections (%s): %w",
			r.conns(), n, orRelay(r.res.StoppedBy), r.firstErr)
	}
	r.res.ConnectsPerSec = float64(r.conns()) / took.Seconds()
	deadline := time.NewTimer(ackTimeout)
	defer deadline.Stop()
	for _, s := range r.subs {
		select {
		case <-s.acked:
		case <-deadline.C:
			return fmt.Errorf("bench: subscriptions not answered within %s", ackTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
		switch {
		case s.ackErr != "":
			r.res.SubscribeErrs++
			r.noteErr(fmt.Errorf("sub answered err %q", s.ackErr))
		case !s.ackOK:
			// The reader ended before an ack; it wrote readErr first.
			r.res.SubscribeErrs++
			r.noteErr(fmt.Errorf("subscriber ended before its ack: %w", s.readErr))
		case s.stall == nil: // slow: only the fast subscribers are counted on
			r.subsOfCh[s.channel].Add(1)
		}
	}
	if r.res.SubscribeErrs > 0 {
		return fmt.Errorf("bench: %d subscriptions failed: %w", r.res.SubscribeErrs, r.firstErr)
	}
	return nil
}

func orRelay(stoppedBy string) string {
	if stoppedBy == "" {
		return "stopped by the relay"
	}
	return "stopped by " + stoppedBy
}

// phase is one stretch of publishing at a steady rate.
type phase struct {
	published, delivered, expected int64
	serverCPU, loadgenCPU          time.Duration
	drained                        bool
	measured                       bool // serverCPU is valid
}

// publishPhase publishes at rate for d, then waits for deliveries to catch
// up, and returns the counts of this phase alone.
func (r *run) publishPhase(ctx context.Context, rate float64, d time.Duration) phase {
	var ph phase
	pub0, del0, exp0 := r.ctr.published.Load(), r.ctr.delivered.Load(), r.expected()
	srv0, measured := r.t.stats()
	cpu0 := selfCPU()

	p := r.cfg.Publishers
	client := newClient(r.t.base, r.cfg.RootCAs, p)
	defer client.CloseIdleConnections()
	url := r.t.base.String() + "/v1/publish"
	if r.cfg.Batch > 1 {
		url += "/batch"
	}
	pubs := make([]*publisher, p)
	k, dashes := r.cfg.Gadgets, r.cfg.dashboards()
	for i := range pubs {
		pubs[i] = &publisher{client: client, url: url, auth: "Bearer " + r.pubToken,
			batch: r.cfg.Batch, payload: r.cfg.PayloadBytes, published: r.published, ctr: &r.ctr}
		// Publisher i takes every p-th dashboard, its gadgets in order;
		// with fewer dashboards than publishers, several share one.
		for d := i % dashes; d < dashes; d += p {
			for c := d * k; c < (d+1)*k; c++ {
				pubs[i].channels = append(pubs[i].channels, r.channels[c])
				pubs[i].indexes = append(pubs[i].indexes, c)
			}
		}
	}
	reqRate := rate / float64(r.cfg.Batch) / float64(p)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i, pb := range pubs {
		wg.Go(func() { pb.run(ctx, staggered(start, reqRate, i, p), end) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	stop := r.startProgress()
	<-done
	for _, pb := range pubs {
		if pb.lastErr != nil {
			r.noteErr(fmt.Errorf("publish: %w", pb.lastErr))
			break
		}
	}

	// Drain: wait until every expected delivery arrived, or none arrived
	// for DrainTimeout.
	want := r.expected()
	last, lastChange := r.ctr.delivered.Load(), time.Now()
	for ctx.Err() == nil {
		got := r.ctr.delivered.Load()
		if got-del0 >= want-exp0 {
			ph.drained = true
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > r.cfg.DrainTimeout {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	srv1, _ := r.t.stats()
	ph.published = r.ctr.published.Load() - pub0
	ph.delivered = r.ctr.delivered.Load() - del0
	ph.expected = want - exp0
	ph.loadgenCPU = selfCPU() - cpu0
	ph.measured = measured
	ph.serverCPU = srv1.cpu - srv0.cpu
	return ph
}

// expected returns the deliveries due so far: each channel's successful
// publishes times its live subscriptions.
func (r *run) expected() int64 {
	var n int64
	for c := range r.published {
		n += r.published[c].Load() * r.subsOfCh[c].Load()
	}
	return n
}

// fanout subscribes, publishes for Duration, and checks every delivery.
func (r *run) fanout(ctx context.Context) error {
	r.setShape()
	if err := r.subscribeAll(ctx); err != nil {
		return err
	}
	subscribed, _ := r.t.stats()
	ph := r.publishPhase(ctx, r.cfg.Rate, r.cfg.Duration)
	r.fillPhase(ph, subscribed)
	r.closeAll()
	r.collectStreams()
	return nil
}

func (r *run) setShape() {
	r.res.Channels, r.res.Subs, r.res.Gadgets = r.cfg.Channels, r.cfg.Subs, r.cfg.Gadgets
	r.res.TargetRate, r.res.Batch, r.res.PayloadBytes = r.cfg.Rate, r.cfg.Batch, r.cfg.PayloadBytes
}

// collectStreams totals every subscription's checks; the readers must have
// exited.
func (r *run) collectStreams() {
	var expected int64
	for _, s := range r.subs {
		if s.channel < 0 || !s.ackOK {
			continue
		}
		if s.stall != nil || s.st.resets > 0 {
			// Slow: cut off by design. Reset: the relay lost the
			// channel's continuity (a failure of its own, counted), and
			// which publishes went to the old epoch cannot be told. So
			// only what it received is judged.
			r.res.Duplicated += s.st.dups
			r.res.Reordered += s.st.reorders
			r.res.Resets += s.st.resets
			continue
		}
		want := uint64(r.published[s.channel].Load())
		expected += int64(want)
		lost, extra := s.st.lost(s.ackOffset + want)
		r.res.Lost += lost
		r.res.Extra += extra
		r.res.Duplicated += s.st.dups
		r.res.Reordered += s.st.reorders
		r.res.Resets += s.st.resets
	}
	r.res.Expected = expected
	r.res.Disconnected = int(r.ctr.readErrors.Load())
	r.collectCloses()
}

func (r *run) collectCloses() {
	for _, s := range r.subs {
		if s.readErr != nil && s.closeCode != 0 {
			if r.res.CloseCodes == nil {
				r.res.CloseCodes = make(map[uint16]int)
			}
			r.res.CloseCodes[s.closeCode]++
		}
		if s.readErr != nil && s.stall == nil { // slow ones are meant to end
			r.noteErr(fmt.Errorf("subscriber %d: %w", s.n, s.readErr))
		}
	}
}

func (r *run) serverStats(now, ready procStats, cpu time.Duration) *ServerStats {
	return &ServerStats{
		CPUSeconds:   cpu.Seconds(),
		RSSBytes:     now.rssBytes,
		BytesPerConn: perConn(now.rssBytes-ready.rssBytes, r.conns()),
		FDs:          now.fds,
		FDLimit:      now.fdLimit,
	}
}

// conns is how many connections the run opened: its subscriptions come in
// groups of Gadgets to a connection (connect's, of one without a channel).
func (r *run) conns() int { return len(r.subs) / r.cfg.Gadgets }

func perConn(bytes int64, conns int) int64 {
	if conns == 0 {
		return 0
	}
	return bytes / int64(conns)
}

// judge fills in Failures.
func (r *run) judge() {
	res := &r.res
	if res.Failures == nil {
		// Kept when set: the child relay's exit is judged before this.
		res.Failures = []string{} // "failures":[] rather than null in JSON
	}
	fail := func(format string, a ...any) { res.Failures = append(res.Failures, fmt.Sprintf(format, a...)) }
	if res.StoppedBy != "" {
		fail("stopped by %s", res.StoppedBy)
	}
	if res.ConnectErrors > 0 && res.StoppedBy == "" {
		fail("%d connections failed", res.ConnectErrors)
	}
	if res.Scenario == ScenarioConnect {
		if res.Disconnected > 0 {
			fail("%d idle connections were closed", res.Disconnected)
		}
		return
	}
	if res.Lost > 0 && res.Scenario != ScenarioRamp {
		fail("%d messages lost", res.Lost)
	}
	if res.Duplicated > 0 {
		fail("%d messages duplicated", res.Duplicated)
	}
	if res.Reordered > 0 {
		fail("%d messages out of order", res.Reordered)
	}
	if res.PublishErrors > 0 && res.Scenario != ScenarioRamp {
		fail("%d publishes failed", res.PublishErrors)
	}
	if res.Resets > 0 {
		fail("%d channel resets", res.Resets)
	}
	if res.Scenario == ScenarioRamp {
		// The first rate's first attempt may fail and its retry hold.
		if len(res.Steps) > 0 && res.CapacityRate == 0 {
			fail("the first step (%s/s) did not hold: start lower with --rate", num(res.Steps[0].TargetRate))
		}
		if r.cfg.MinRate > 0 && res.CapacityRate < r.cfg.MinRate {
			fail("capacity %s/s is below --min-rate %s/s", num(res.CapacityRate), num(r.cfg.MinRate))
		}
		return
	}
	if res.Disconnected > 0 {
		fail("%d subscriptions were closed during the run", res.Disconnected)
	}
	if c := res.Churn; c != nil {
		if c.NotRecovered > 0 {
			fail("%d of %d reconnects not recovered", c.NotRecovered, c.Reconnects)
		}
		if c.Errors > 0 {
			fail("%d reconnects failed", c.Errors)
		}
		if c.PerSec < heldShare*c.TargetRate {
			fail("%s reconnects/s is below %.0f%% of --reconnect-rate %s/s", num(c.PerSec), 100*heldShare, num(c.TargetRate))
		}
	}
	if sl := res.Slow; sl != nil {
		if sl.NotClosed > 0 {
			fail("%d of %d slow subscribers were not closed by the relay", sl.NotClosed, sl.SlowSubs)
		}
		if sl.ClosedOther > 0 {
			fail("%d of %d slow subscribers were closed with another code than 4008", sl.ClosedOther, sl.SlowSubs)
		}
		if sl.RelayDisconnects >= 0 && sl.RelayDisconnects < int64(sl.SlowSubs) {
			fail("the relay counted %d slow-consumer closes (4008) for %d slow subscribers", sl.RelayDisconnects, sl.SlowSubs)
		}
		if sl.P99Ratio > r.cfg.MaxP99Ratio {
			fail("fast p99 with slow subscribers is x%.2f of without, above --max-p99-ratio %g", sl.P99Ratio, r.cfg.MaxP99Ratio)
		}
	}
	if r.cfg.MaxP99 > 0 && res.Latency != nil && res.Latency.P99 > float64(r.cfg.MaxP99)/float64(time.Millisecond) {
		fail("p99 %.2f ms is above --max-p99 %s", res.Latency.P99, r.cfg.MaxP99)
	}
	if r.cfg.MinRate > 0 && res.PublishedPerSec < r.cfg.MinRate {
		fail("published %s/s is below --min-rate %s/s", num(res.PublishedPerSec), num(r.cfg.MinRate))
	}
}
