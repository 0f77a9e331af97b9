package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// slowMetric counts the relay's 4008 closes; slow reads it from the child's
// admin listener to tell when the relay cut the slow subscribers off,
// since a client that does not read cannot see its close frame.
const slowMetric = "realtime_slow_consumer_disconnects_total"

// closedMetric counts the relay's closes by reason: a slow subscriber
// closed for another reason than 4008 (dead_peer: it did not answer
// pings either) shows there.
const closedMetric = "realtime_connections_closed_total"

// slowWatchEvery is how often slow samples the child during its second
// phase.
const slowWatchEvery = 100 * time.Millisecond

// slow runs two phases of Duration on the same connections: first every
// subscriber reads (the no-slow reference), then SlowFraction of each
// channel's subscribers stop reading. The relay must close those while the
// others lose nothing and keep their p99 within MaxP99Ratio of the first
// phase's. A stopped subscriber reads again once the second phase is over,
// so that it sees how its connection ended: a 4008 close frame, or the
// connection's end when the relay could not write the frame to it.
func (r *run) slow(ctx context.Context) error {
	r.setShape()
	r.stall = &stall{resume: make(chan struct{})}
	defer r.stall.release()
	if err := r.subscribeAll(ctx); err != nil {
		return err
	}
	subscribed, _ := r.t.stats()
	st := &SlowStats{Fraction: r.cfg.SlowFraction, RelayDisconnects: -1}
	r.res.Slow = st
	var slow []*subscriber
	for _, s := range r.subs {
		if s.stall != nil {
			slow = append(slow, s)
		}
	}
	st.SlowSubs, st.FastSubs = len(slow), len(r.subs)-len(slow)

	ph1 := r.publishPhase(ctx, r.cfg.Rate, r.cfg.Duration)
	st.NoSlow = latencyOf(r.lat.merged())
	if s, ok := r.t.stats(); ok {
		st.NoSlowRSSBytes = s.rssBytes
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	r.lat.reset()
	base, closes0, _ := r.relayCloses()
	watch := r.watchSlow(base, int64(len(slow)))
	r.stall.stop.Store(true)
	ph2 := r.publishPhase(ctx, r.cfg.Rate, r.cfg.Duration)
	w := watch()
	st.PeakRSSBytes, st.CutoffSeconds = w.peakRSS, w.cutoff.Seconds()
	if n, closes, ok := r.relayCloses(); ok {
		st.RelayDisconnects = n - base
		for reason, v := range closes {
			if d := v - closes0[reason]; d > 0 {
				if st.RelayCloses == nil {
					st.RelayCloses = make(map[string]int64)
				}
				st.RelayCloses[reason] = d
			}
		}
	}

	// Let the stopped subscribers read what their sockets hold, up to the
	// end the relay gave them.
	r.stall.release()
	deadline := time.NewTimer(r.cfg.DrainTimeout)
	defer deadline.Stop()
wait:
	for _, s := range slow {
		select {
		case <-s.done:
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}

	d := 2 * r.cfg.Duration.Seconds()
	r.res.Seconds = d
	r.res.Published = ph1.published + ph2.published
	r.res.PublishErrors = r.ctr.publishErrors.Load()
	r.res.PublishedPerSec = float64(r.res.Published) / d
	r.res.Delivered = ph1.delivered + ph2.delivered
	r.res.DeliveredPerSec = float64(r.res.Delivered) / d
	r.res.Latency = latencyOf(r.lat.merged())
	r.res.LoadgenCPUSeconds = (ph1.loadgenCPU + ph2.loadgenCPU).Seconds()
	if s, ok := r.t.stats(); ok {
		cpu := ph1.serverCPU + ph2.serverCPU
		r.res.Server = r.serverStats(s, r.readyStats, cpu)
		r.res.Server.BytesPerConn = perConn(subscribed.rssBytes-r.readyStats.rssBytes, r.conns())
		if r.res.Delivered > 0 {
			r.res.Server.CPUMicrosPerMsg = float64(cpu.Microseconds()) / float64(r.res.Delivered)
		}
	}
	if st.NoSlow != nil && r.res.Latency != nil && st.NoSlow.P99 > 0 {
		st.P99Ratio = r.res.Latency.P99 / st.NoSlow.P99
	}

	// A slow subscriber whose reader is still running was not closed; the
	// readers' fields may be read once closeAll has waited for them.
	ended := make(map[*subscriber]bool, len(slow))
	for _, s := range slow {
		select {
		case <-s.done:
			ended[s] = true
		default:
		}
	}
	r.closeAll()
	r.collectStreams()
	r.res.Disconnected = 0
	for _, s := range r.subs {
		switch {
		case s.stall == nil:
			if s.readErr != nil {
				r.res.Disconnected++
			}
		case !ended[s] || s.readErr == nil:
			st.NotClosed++
		case s.closeCode == 4008:
			st.Closed4008++
		case s.closeCode != 0:
			st.ClosedOther++
		default:
			st.ClosedConn++
		}
	}
	return nil
}

// slowWatch is what watchSlow saw.
type slowWatch struct {
	peakRSS int64
	// cutoff is how long the relay took to close every slow subscriber,
	// by its own count; zero when it did not (or cannot be read).
	cutoff time.Duration
}

// watchSlow samples the child's RSS and slow-consumer count until the
// returned stop is called. base is the count before the slow subscribers
// stop; want how many they are.
func (r *run) watchSlow(base, want int64) (stop func() slowWatch) {
	quit, finished := make(chan struct{}), make(chan struct{})
	var w slowWatch
	start := time.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(slowWatchEvery)
		defer tick.Stop()
		for {
			if s, ok := r.t.stats(); ok {
				w.peakRSS = max(w.peakRSS, s.rssBytes)
			}
			if w.cutoff == 0 {
				if n, _, ok := r.relayCloses(); ok && n-base >= want {
					w.cutoff = time.Since(start)
				}
			}
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	return func() slowWatch { close(quit); <-finished; return w }
}

// relayCloses reads, from a child's admin /metrics, the relay's count of
// 4008 closes and of every connection close by reason; ok is false for a
// URL target or when the page cannot be read.
func (r *run) relayCloses() (slow int64, byReason map[string]int64, ok bool) {
	if r.t.adminURL == "" || r.t.cmd == nil {
		return 0, nil, false
	}
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get(r.t.adminURL + "/metrics")
	if err != nil {
		return 0, nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, nil, false
	}
	m, err := parseMetrics(resp.Body)
	if err != nil {
		return 0, nil, false
	}
	v, ok := m[slowMetric]
	if !ok {
		return 0, nil, false
	}
	byReason = make(map[string]int64)
	for series, n := range m {
		if reason, found := strings.CutPrefix(series, closedMetric+`{reason="`); found {
			byReason[strings.TrimSuffix(reason, `"}`)] = int64(n)
		}
	}
	return int64(v), byReason, true
}

// parseMetrics returns the series of a Prometheus text page and their
// values, keyed by the series as written (name and labels).
func parseMetrics(r io.Reader) (map[string]float64, error) {
	m := make(map[string]float64)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bench: metrics line %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}
