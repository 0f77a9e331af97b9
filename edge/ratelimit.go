package edge

import (
	"sync"
	"time"
)

// siteLimiter rate-limits publishes per site, so that one tenant flooding
// the relay cannot starve the others. Safe for concurrent use.
type siteLimiter struct {
	rate, burst float64

	mu    sync.Mutex
	sites map[string]*bucket // guarded by mu
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxIdleBuckets bounds the map: past it, full (idle) buckets are dropped.
const maxIdleBuckets = 10000

func newSiteLimiter(rate float64) *siteLimiter {
	return &siteLimiter{rate: rate, burst: 2 * rate, sites: make(map[string]*bucket)}
}

// allow takes n tokens from site's bucket, all or nothing.
func (l *siteLimiter) allow(site string, n int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.sites[site]
	if !ok {
		if len(l.sites) >= maxIdleBuckets {
			l.sweepLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.sites[site] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// sweepLocked forgets the sites whose buckets have refilled: they are
// indistinguishable from new ones.
func (l *siteLimiter) sweepLocked(now time.Time) {
	for site, b := range l.sites {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.sites, site)
		}
	}
}
