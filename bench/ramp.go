package bench

import (
	"context"
	"fmt"
	"time"
)

// heldShare is the share of the target rate the publishers must achieve
// for a ramp step to count as held.
const heldShare = 0.95

// ramp subscribes once, then publishes in steps of Duration at a rate
// multiplied by RampFactor each step, until a step fails RampAttempts times
// in a row; the capacity is the last rate held. A step holds when
// publishers reached the rate, every delivery arrived before the drain
// timeout, no subscription was closed, no publish failed and p99 stayed
// within MaxP99. Every attempt is in the result's steps; loss fails the
// run whatever the steps say.
func (r *run) ramp(ctx context.Context) error {
	r.setShape()
	if err := r.subscribeAll(ctx); err != nil {
		return err
	}
	subscribed, _ := r.t.stats()
	maxP99 := float64(r.cfg.MaxP99) / float64(time.Millisecond)
	var best *Step
	var loadgen time.Duration
	start := time.Now()
	attempts := 0
	for rate := r.cfg.Rate; ctx.Err() == nil; {
		attempts++
		r.lat.reset()
		readErrs, pubErrs := r.ctr.readErrors.Load(), r.ctr.publishErrors.Load()
		ph := r.publishPhase(ctx, rate, r.cfg.Duration)
		loadgen += ph.loadgenCPU
		st := Step{
			TargetRate:      rate,
			PublishedPerSec: float64(ph.published) / r.cfg.Duration.Seconds(),
			DeliveredPerSec: float64(ph.delivered) / r.cfg.Duration.Seconds(),
			LoadgenCPU:      ph.loadgenCPU.Seconds(),
			Latency:         latencyOf(r.lat.merged()),
		}
		if st.Latency != nil {
			st.P99 = st.Latency.P99
		}
		if ph.measured && ph.delivered > 0 {
			st.ServerCPUMicros = float64(ph.serverCPU.Microseconds()) / float64(ph.delivered)
		}
		switch {
		case !ph.drained:
			st.Why = fmt.Sprintf("delivery fell behind (%d of %d delivered)", ph.delivered, ph.expected)
		case r.ctr.readErrors.Load() > readErrs:
			st.Why = fmt.Sprintf("%d subscriptions closed", r.ctr.readErrors.Load()-readErrs)
		case r.ctr.publishErrors.Load() > pubErrs:
			st.Why = fmt.Sprintf("%d publishes failed", r.ctr.publishErrors.Load()-pubErrs)
		case st.PublishedPerSec < heldShare*rate:
			st.Why = fmt.Sprintf("publishers reached only %s/s (publish calls too slow: relay or CPU saturated)", num(st.PublishedPerSec))
		case st.Latency == nil:
			st.Why = "nothing delivered"
		case st.P99 > maxP99:
			st.Why = fmt.Sprintf("p99 %.2f ms above %s", st.P99, r.cfg.MaxP99)
		}
		st.Held = st.Why == ""
		r.res.Steps = append(r.res.Steps, st)
		if !st.Held {
			if attempts < r.cfg.RampAttempts {
				continue
			}
			break
		}
		attempts = 0
		best = &r.res.Steps[len(r.res.Steps)-1]
		if r.cfg.RampMaxRate > 0 && rate >= r.cfg.RampMaxRate {
			break
		}
		rate *= r.cfg.RampFactor
		if r.cfg.RampMaxRate > 0 {
			rate = min(rate, r.cfg.RampMaxRate)
		}
	}
	r.res.Seconds = time.Since(start).Seconds()
	r.res.Published = r.ctr.published.Load()
	r.res.PublishErrors = r.ctr.publishErrors.Load()
	r.res.Delivered = r.ctr.delivered.Load()
	r.res.LoadgenCPUSeconds = loadgen.Seconds()
	if best != nil {
		r.res.CapacityRate = best.TargetRate
		r.res.PublishedPerSec = best.PublishedPerSec
		r.res.DeliveredPerSec = best.DeliveredPerSec
		r.res.Latency = best.Latency
	}
	if s, ok := r.t.stats(); ok {
		r.res.Server = r.serverStats(s, r.readyStats, s.cpu-subscribed.cpu)
		r.res.Server.BytesPerConn = perConn(subscribed.rssBytes-r.readyStats.rssBytes, len(r.subs))
		if best != nil {
			r.res.Server.CPUMicrosPerMsg = best.ServerCPUMicros
		}
	}
	r.closeAll()
	r.collectStreams()
	return nil
}
