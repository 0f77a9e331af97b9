package bench

import (
	"fmt"
	"time"
)

// startProgress prints a progress line every second to cfg.Progress until
// the returned stop is called; it does nothing without cfg.Progress. The
// line is redrawn in place ("\r"), so Progress should be a terminal.
func (r *run) startProgress() (stop func()) {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(progressEvery)
		defer tick.Stop()
		start := time.Now()
		pub, del, rec := r.ctr.published.Load(), r.ctr.delivered.Load(), r.ctr.reconnects.Load()
		for {
			select {
			case <-quit:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-tick.C:
			}
			p, d, rc := r.ctr.published.Load(), r.ctr.delivered.Load(), r.ctr.reconnects.Load()
			p99 := float64(r.lat.merged().ValueAtQuantile(99)) / 1e3
			errs := r.ctr.publishErrors.Load() + r.ctr.readErrors.Load()
			reconnects := ""
			if r.cfg.Scenario == ScenarioChurn {
				reconnects = fmt.Sprintf("  reconnects %s/s", formatCount(rc-rec))
			}
			fmt.Fprintf(w, "\r\033[K%4.0fs  conns %s  published %s/s  delivered %s/s%s  p99 %.1f ms  errors %d",
				time.Since(start).Seconds(), formatCount(r.ctr.open.Load()),
				formatCount(p-pub), formatCount(d-del), reconnects, p99, errs)
			pub, del, rec = p, d, rc
		}
	}()
	return func() { close(quit); <-finished }
}
