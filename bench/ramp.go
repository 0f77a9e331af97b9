package bench

import (
	"context"
	"fmt"
	"math"
	"time"
)

// heldShare is the share of the target rate the publishers must achieve
// for a ramp step to count as held.
const heldShare = 0.95

// ramp subscribes once, then publishes in steps of Duration: from Rate,
// multiplied by RampFactor each step (up to RampMaxRate) until a step
// fails; then RampRefine more steps bisect the rates between the highest
// held and the lowest failed (rampNext). The capacity is the highest rate
// held. A step holds when publishers reached the rate, every delivery
// arrived before the drain timeout, no subscription was closed, no
// publish failed and p99 stayed within MaxP99; it fails when all of its
// RampAttempts runs did not hold, refinement steps too. Every attempt is
// in the result's steps. Loss, like a failed publish, fails the step it
// happened in (beyond capacity it is the expected outcome), not the run.
// A closed subscription fails its step and ends the ramp: any later step
// would hold, if at all, with fewer subscribers than the shape.
func (r *run) ramp(ctx context.Context) error {
	r.setShape()
	if err := r.subscribeAll(ctx); err != nil {
		return err
	}
	subscribed, _ := r.t.stats()
	var loadgen time.Duration
	start := time.Now()
	steps, best := rampSteps(ctx, &r.cfg, func(rate float64) Step { return r.rampAttempt(ctx, rate, &loadgen) })
	r.res.Steps = steps
	r.res.Seconds = time.Since(start).Seconds()
	r.res.Published = r.ctr.published.Load()
	r.res.PublishErrors = r.ctr.publishErrors.Load()
	r.res.Delivered = r.ctr.delivered.Load()
	r.res.LoadgenCPUSeconds = loadgen.Seconds()
	if best >= 0 {
		b := r.res.Steps[best]
		r.res.CapacityRate = b.TargetRate
		r.res.PublishedPerSec = b.PublishedPerSec
		r.res.DeliveredPerSec = b.DeliveredPerSec
		r.res.Latency = b.Latency
	}
	if s, ok := r.t.stats(); ok {
		r.res.Server = r.serverStats(s, r.readyStats, s.cpu-subscribed.cpu)
		r.res.Server.BytesPerConn = perConn(subscribed.rssBytes-r.readyStats.rssBytes, r.conns())
		if best >= 0 {
			r.res.Server.CPUMicrosPerMsg = r.res.Steps[best].ServerCPUMicros
		}
	}
	r.closeAll()
	r.collectStreams()
	return nil
}

// rampAttempt runs one attempt of a ramp step at rate, adds the load
// generator's CPU to *loadgen, and says whether the step held and if not
// why.
func (r *run) rampAttempt(ctx context.Context, rate float64, loadgen *time.Duration) Step {
	maxP99 := float64(r.cfg.MaxP99) / float64(time.Millisecond)
	r.lat.reset()
	pubErrs := r.ctr.publishErrors.Load()
	ph := r.publishPhase(ctx, rate, r.cfg.Duration)
	*loadgen += ph.loadgenCPU
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
	case r.ctr.readErrors.Load() > 0:
		// In this attempt or between two: it ran short, and so would
		// every later one.
		st.Why = fmt.Sprintf("%d subscriptions closed: the shape is no longer whole", r.ctr.readErrors.Load())
		st.Final = true
	case !ph.drained:
		st.Why = fmt.Sprintf("delivery fell behind (%d of %d delivered)", ph.delivered, ph.expected)
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
	return st
}

// rampSteps runs the ramp's steps with attempt, each up to RampAttempts
// times, at the rates rampNext chooses, and returns every attempt and the
// index of the held one at the highest rate (-1 if none held).
func rampSteps(ctx context.Context, cfg *Config, attempt func(rate float64) Step) (steps []Step, best int) {
	var held, failed float64 // the bounds: see rampNext
	refined := 0
	best = -1
	for ctx.Err() == nil {
		rate, ok := rampNext(cfg, held, failed, refined)
		if !ok {
			break
		}
		refine := failed > 0
		st := Step{}
		for range cfg.RampAttempts {
			if ctx.Err() != nil {
				break
			}
			st = attempt(rate)
			st.Refine = refine
			steps = append(steps, st)
			if st.Held || st.Final {
				break
			}
		}
		if st.Final {
			break
		}
		if refine {
			refined++
		}
		if st.Held {
			held, best = rate, len(steps)-1
		} else {
			failed = rate
		}
	}
	return steps, best
}

// rampNext chooses the rate of the ramp's next step from the steps so
// far: held is the highest rate held and failed the lowest that failed
// (zero: none yet), refined the number of refinement steps run. Until a
// step fails the rate rises: Rate first, then held times RampFactor, at
// most RampMaxRate (the ramp ends once RampMaxRate holds). After, while
// fewer than RampRefine refinement steps have run, it is the geometric
// midpoint of held and failed, which halves their ratio each step. If no
// step held there is nothing to refine. ok is false when the ramp is done.
func rampNext(c *Config, held, failed float64, refined int) (rate float64, ok bool) {
	switch {
	case failed > 0 && (held == 0 || refined >= c.RampRefine):
		return 0, false
	case failed > 0:
		return math.Sqrt(held * failed), true
	case held == 0:
		return c.Rate, true
	case c.RampMaxRate > 0 && held >= c.RampMaxRate:
		return 0, false
	case c.RampMaxRate > 0:
		return min(held*c.RampFactor, c.RampMaxRate), true
	}
	return held * c.RampFactor, true
}
