package bench

import (
	"context"
	"math"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/testutil"
)

// TestRampNext drives rampNext through whole ramps: each case gives the
// outcome of every step (true: held), the rates the ramp must choose, how
// many of them rise before the refinements start, and the capacity.
func TestRampNext(t *testing.T) {
	f := func(name string, cfg Config, outcomes []bool, want []float64, rising int, capacity float64) {
		t.Run(name, func(t *testing.T) {
			require.Len(t, outcomes, len(want), "an outcome for every step")
			cfg.Scenario = ScenarioRamp
			cfg.setDefaults()
			var held, failed float64
			refined := 0
			var got []float64
			for i := 0; ; i++ {
				rate, ok := rampNext(&cfg, held, failed, refined)
				if !ok {
					break
				}
				if i >= len(outcomes) {
					t.Fatalf("step %d at %g: the ramp should have ended", i, rate)
				}
				got = append(got, rate)
				// ramp's own bookkeeping: a step with a failure below
				// it is a refinement.
				assert.Equal(t, i >= rising, failed > 0, "step %d is a refinement", i)
				if failed > 0 {
					refined++
				}
				if outcomes[i] {
					held = rate
				} else {
					failed = rate
				}
			}
			require.Len(t, got, len(want), "steps run: %v", got)
			assert.InDeltaSlice(t, want, got, 1e-9)
			assert.InDelta(t, capacity, held, 1e-9)
		})
	}
	const y, n = true, false
	mid := func(lo, hi float64) float64 { return math.Sqrt(lo * hi) }

	m1 := mid(225, 337.5)
	f("rise, fail, refinement held then failed", Config{Rate: 100},
		[]bool{y, y, y, n, y, n},
		[]float64{100, 150, 225, 337.5, m1, mid(m1, 337.5)}, 4,
		m1)
	m2 := mid(150, 225)
	f("refinement failed then held", Config{Rate: 100},
		[]bool{y, y, n, n, y},
		[]float64{100, 150, 225, m2, mid(150, m2)}, 3,
		mid(150, m2))
	m3 := mid(100, 200)
	m4 := mid(m3, 200)
	f("three refinements all held", Config{Rate: 100, RampFactor: 2, RampRefine: 3},
		[]bool{y, n, y, y, y},
		[]float64{100, 200, m3, m4, mid(m4, 200)}, 2,
		mid(m4, 200))
	f("no refinement", Config{Rate: 100, RampRefine: -1},
		[]bool{y, y, n},
		[]float64{100, 150, 225}, 3,
		150)
	f("no step held", Config{Rate: 100},
		[]bool{n},
		[]float64{100}, 1,
		0)
	f("max rate held ends the ramp", Config{Rate: 100, RampMaxRate: 200},
		[]bool{y, y, y},
		[]float64{100, 150, 200}, 3,
		200)
	m5 := mid(150, 200)
	f("max rate failed refines below it", Config{Rate: 100, RampMaxRate: 200},
		[]bool{y, y, n, y, n},
		[]float64{100, 150, 200, m5, mid(m5, 200)}, 3,
		m5)
	f("first step above the cap holds", Config{Rate: 300, RampMaxRate: 200},
		[]bool{y},
		[]float64{300}, 1,
		300)
}

// TestRampJudgeRetriedFirstStep: a first rate whose first attempt failed
// and whose retry held is a capacity, not a failed run.
func TestRampJudgeRetriedFirstStep(t *testing.T) {
	failed := Step{TargetRate: 40, Why: "p99 60 ms above 50ms"}
	held := Step{TargetRate: 40, Held: true}
	r := &run{res: Result{Scenario: ScenarioRamp, Steps: []Step{failed, held}, CapacityRate: 40}}
	r.judge()
	assert.Empty(t, r.res.Failures)

	r = &run{res: Result{Scenario: ScenarioRamp, Steps: []Step{failed, failed}}}
	r.judge()
	require.Len(t, r.res.Failures, 1)
	assert.Contains(t, r.res.Failures[0], "did not hold")
}

// TestRampSteps drives the ramp's loop with scripted attempts: a failed
// first attempt is retried, a step fails only when every attempt does, the
// refinements are marked, and the capacity is the highest rate held.
func TestRampSteps(t *testing.T) {
	cfg := Config{Rate: 100}
	cfg.setDefaults() // factor 1.5, 2 attempts, 2 refinements
	// Outcomes by rate, one per attempt at it.
	script := map[float64][]bool{
		100:    {false, true}, // held on its retry
		150:    {true},
		225:    {false, false}, // the first failed step
		183.71: {true},         // sqrt(150*225): held
		203.31: {false, false}, // sqrt(183.71*225): failed
	}
	var rates []float64
	steps, best := rampSteps(context.Background(), &cfg, func(rate float64) Step {
		rate = math.Round(rate*100) / 100
		rates = append(rates, rate)
		out := script[rate]
		require.NotEmpty(t, out, "no attempt expected at %v", rate)
		held := out[0]
		script[rate] = out[1:]
		return Step{TargetRate: rate, Held: held}
	})
	assert.Equal(t, []float64{100, 100, 150, 225, 225, 183.71, 203.31, 203.31}, rates)
	require.Len(t, steps, 8)
	assert.Equal(t, []bool{false, false, false, false, false, true, true, true},
		[]bool{steps[0].Refine, steps[1].Refine, steps[2].Refine, steps[3].Refine, steps[4].Refine, steps[5].Refine, steps[6].Refine, steps[7].Refine})
	require.Equal(t, 5, best)
	assert.InDelta(t, 183.71, steps[best].TargetRate, 0)

	// A cancelled run stops between attempts.
	ctx, cancel := context.WithCancel(context.Background())
	steps, best = rampSteps(ctx, &cfg, func(rate float64) Step { cancel(); return Step{TargetRate: rate} })
	assert.Len(t, steps, 1)
	assert.Equal(t, -1, best)
}

// TestRampEndsAtAClosedSubscription: an attempt in which (or before which)
// a subscription was closed is the ramp's last: a later step could only
// hold with fewer subscribers than the shape.
func TestRampEndsAtAClosedSubscription(t *testing.T) {
	cfg := Config{Rate: 100}
	cfg.setDefaults()
	var rates []float64
	steps, best := rampSteps(context.Background(), &cfg, func(rate float64) Step {
		rates = append(rates, rate)
		if rate > 100 {
			return Step{TargetRate: rate, Why: "1 subscriptions closed", Final: true}
		}
		return Step{TargetRate: rate, Held: true}
	})
	assert.Equal(t, []float64{100, 150}, rates, "no retry, no refinement after it")
	require.Len(t, steps, 2)
	assert.Equal(t, 0, best)

	// Against a relay: one subscriber's stream ends (as when the relay
	// drops it) once the first attempt publishes.
	relay := testutil.StartRelay(t)
	cfg = Config{Scenario: ScenarioRamp, URL: "http://" + relay.Addr, Key: relay.Key, Channels: 1, Subs: 4,
		Rate: 40, Duration: time.Second, RampMaxRate: 40, MaxP99: 10 * time.Second, Publishers: 2, SourceAddrs: 2}
	cfg.setDefaults()
	r := &run{cfg: cfg, lat: newLatencies(4), reconnectLat: newLatencies(1), res: Result{Scenario: ScenarioRamp}}
	u, err := url.Parse(cfg.URL)
	require.NoError(t, err)
	r.t = &target{name: "relay", base: u, key: cfg.Key}
	r.dialer = newDialer(u, nil, cfg.SourceAddrs, defaultDialTimeout)
	require.NoError(t, r.mintTokens())
	r.pollers = newPollers()
	go func() {
		for deadline := time.Now().Add(testutil.Wait); r.ctr.published.Load() == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		_ = r.subs[0].conn.nc.(*net.TCPConn).CloseRead()
	}()
	require.NoError(t, r.ramp(context.Background()))
	r.closeAll()
	r.pollers.stop()
	r.judge()
	require.Len(t, r.res.Steps, 1, "%+v", r.res.Steps)
	assert.True(t, r.res.Steps[0].Final)
	assert.Zero(t, r.res.CapacityRate, "40/s was never held by the 4 subscribers")
	assert.False(t, r.res.OK())
}
