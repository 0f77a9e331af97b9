package edge

import (
	"math/rand/v2"
	"time"
)

// Keepalive: every WebSocket is pinged each PingInterval, and one that has
// sent nothing (no frame, no pong) for KeepaliveTimeout is closed as a dead
// peer. One sweeper per Server does both, for every connection, each
// sweepPeriod: it asks a connection's actor for a ping when one is due (the
// actor writes it behind what is queued), and ends a silent connection by
// moving its read deadline into the past, so that its read loop ends with
// a timeout, counted as dead_peer. The read goroutine only notes when it
// last heard the client (wsConn.heard, an atomic store).
//
// Why a sweeper, and no timer or deadline per connection:
//   - A timer costs about 190 B per idle connection, 380 B of RSS once the
//     heap has grown to twice what it keeps.
//   - SetReadDeadline, called from a frame handler to move the deadline
//     per frame, grows the read goroutine's stack from 2 to 4 KiB, and Go
//     never shrinks it back while the goroutine parks deeper than a
//     quarter of it, which gws's read loop does: 2 KiB more for every
//     connection that ever answered a ping (22 MB of stacks for 10,000
//     pinged connections, against 45 MB). The read loop parks close to
//     what a 2 KiB stack holds, too close for even a wrapper around the
//     connection it reads (measured: every stack grew), so the deadline
//     is moved from outside (TestReadGoroutinesKeepTheirFirstStack).
//
// A sweep looks at each connection under Server.mu: an atomic load and two
// comparisons each, about 10 µs for 10,000 connections.

// clockStart is the origin of sinceStart: a monotonic clock as one int64,
// unaffected by changes of the wall clock.
var clockStart = time.Now()

func sinceStart() int64 { return int64(time.Since(clockStart)) }

// sweepPeriod is how often the sweeper looks: pings go out up to one
// period late, and a dead peer is closed between KeepaliveTimeout and
// KeepaliveTimeout+sweepPeriod after it was last heard.
func sweepPeriod(c *Config) time.Duration {
	return min(c.PingInterval/8, c.KeepaliveTimeout/8, time.Second)
}

// firstPingIn is when a new connection's first ping is due: at a random
// point of its first interval, and every interval after that. Connections
// made together (every client reconnecting after a deploy, or a bench's)
// would otherwise be pinged together for ever after: 10,000 pings and
// pongs in the same second every 25 s, a latency spike for every message
// in that second.
func firstPingIn(interval time.Duration) time.Duration {
	return 1 + rand.N(interval)
}

// keepAlive sweeps every sweepPeriod until stop closes.
func (s *Server) keepAlive(stop <-chan struct{}) {
	interval, timeout := int64(s.cfg.PingInterval), int64(s.cfg.KeepaliveTimeout)
	tick := time.NewTicker(sweepPeriod(&s.cfg))
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
			switch {
			case c.swept:
			case now-c.heard.Load() > timeout:
				c.swept = true
				_ = c.nc.SetReadDeadline(longAgo)
			case now >= c.pingAt:
				c.pingAt = now + interval
				c.actor.Ping()
			}
		}
		s.mu.Unlock()
	}
}
