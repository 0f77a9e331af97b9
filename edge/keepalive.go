package edge

import (
	"time"
)

// Dead peers: a WebSocket that has sent nothing (no frame, no pong) for
// KeepaliveTimeout is closed. Its read goroutine only notes when it last
// heard the client (wsConn.heard, an atomic store), and one sweeper per
// Server ends every connection silent for longer, by moving its read
// deadline into the past: the read loop then ends with a timeout, counted
// as dead_peer, as a deadline of its own would end it.
//
// No deadline is moved per frame: SetReadDeadline, called from a frame
// handler, grows the read goroutine's stack from 2 to 4 KiB, and Go never
// shrinks it back while the goroutine parks deeper than a quarter of it,
// which gws's read loop does. That was 2 KiB more for every connection
// that had answered one ping (22 MB of stacks for 10,000 pinged
// connections, against 45 MB). The read loop parks close to what a 2 KiB
// stack holds, too close for even a wrapper around the connection it reads
// (measured: every stack grew), so the deadline is moved from outside
// (TestReadGoroutinesKeepTheirFirstStack).

// clockStart is the origin of sinceStart: a monotonic clock as one int64,
// unaffected by changes of the wall clock.
var clockStart = time.Now()

func sinceStart() int64 { return int64(time.Since(clockStart)) }

// sweepPeriod is how often the sweeper looks: a connection is closed
// between KeepaliveTimeout and KeepaliveTimeout+sweepPeriod after it was
// last heard.
func sweepPeriod(timeout time.Duration) time.Duration {
	return min(timeout/8, time.Second)
}

// sweepDeadPeers ends, every sweepPeriod until stop closes, each connection
// silent for longer than KeepaliveTimeout. It looks at each connection
// once a period under mu, an atomic load each: about 10 µs for 10,000.
func (s *Server) sweepDeadPeers(stop <-chan struct{}) {
	timeout := int64(s.cfg.KeepaliveTimeout)
	tick := time.NewTicker(sweepPeriod(s.cfg.KeepaliveTimeout))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now := sinceStart()
		s.mu.Lock()
		for c := range s.conns {
			if !c.swept && now-c.heard.Load() > timeout {
				c.swept = true
				_ = c.nc.SetReadDeadline(longAgo)
			}
		}
		s.mu.Unlock()
	}
}
