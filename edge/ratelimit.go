package edge

import (
	"sync"
	"time"
)

// siteLimiter rate-limits publishes per site, so that one tenant flooding
// the relay cannot starve the others. Safe for concurrent use.
type siteLimiter struct {
	rate, burst float64

	mu      sync.Mutex
	sites   map[string]*bucket // guarded by mu
	sweptAt time.Time          // guarded by mu: the last sweep
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxIdleBuckets is the map size past which idle (full) buckets are
// dropped, at most once a second: a map of busy sites only grows with
// them, and must not cost a full scan per publish.
const maxIdleBuckets = 10000

// newSiteLimiter allows rate publishes per second per site, in bursts of
// twice that. The burst is at least one publish: a rate below 0.5 would
// otherwise never let a publish through.
func newSiteLimiter(rate float64) *siteLimiter {
	return &siteLimiter{rate: rate, burst: max(2*rate, 1), sites: make(map[string]*bucket)}
}

// allow takes n tokens from site's bucket, all or nothing. A batch larger
// than the burst could never be taken whole, so it goes through when the
// bucket is full and leaves the site in debt, which it pays back at rate
// before its next publish: the long-run rate stays bounded either way.
func (l *siteLimiter) allow(site string, n int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.sites[site]
	if !ok {
		if len(l.sites) >= maxIdleBuckets && now.Sub(l.sweptAt) >= time.Second {
			l.sweepLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.sites[site] = b
	}
	b.tokens, b.at = l.refilled(b, now), now
	if b.tokens < float64(n) && b.tokens < l.burst {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// sweepLocked forgets the sites whose buckets have refilled: they are
// indistinguishable from new ones.
func (l *siteLimiter) sweepLocked(now time.Time) {
	l.sweptAt = now
	for site, b := range l.sites {
		if l.refilled(b, now) >= l.burst {
			delete(l.sites, site)
		}
	}
}

// refilled is b's tokens at now.
func (l *siteLimiter) refilled(b *bucket, now time.Time) float64 {
	return min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
}
