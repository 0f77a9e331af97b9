package edge

import (
	"math/rand/v2"
	"time"
)

// Keepalive: every WebSocket is pinged each PingInterval, and one that has
// sent nothing (no frame, no pong) for KeepaliveTimeout is closed as a dead
// peer. One goroutine per Server does both (keepAlive): each connection
// waits in a timing wheel for its next check, the sooner of its next ping
// and the moment it would have been silent too long. At a check it is asked
// for a ping (its actor writes it with its next write) if one is due, or
// ended if it was silent too long, by moving its read deadline into the
// past: its read loop then ends with a timeout, counted as dead_peer. The
// read goroutine only notes when it last heard the client (wsConn.heard,
// an atomic store).
//
// Why this, and no timer or deadline per connection:
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
//   - A wheel does work only for the connections due, in slots of at most
//     100 ms, so pings go out spread as the connections' first pings were.
//     A sweep over every connection each second sent a second's pings in
//     one burst (p999 8-10 ms and a 20-28 ms maximum at 100 publishes/s to
//     10,000 connections, against 3-6 ms and 5-10 ms), and sweeping every
//     50 ms cost 40% more CPU at that load.
//
// Concurrency: the wheel and each connection's place in it are guarded by
// Server.mu, as Server.conns is: a connection joins both on its upgrade and
// leaves both in OnClose.

// clockStart is the origin of sinceStart: a monotonic clock as one int64,
// unaffected by changes of the wall clock.
var clockStart = time.Now()

func sinceStart() int64 { return int64(time.Since(clockStart)) }

// firstPingIn is when a new connection's first ping is due: at a random
// point of its first interval, and every interval after that. Connections
// made together (every client reconnecting after a deploy, or a bench's)
// would otherwise be pinged together for ever after: 10,000 pings and
// pongs in the same second every 25 s, a latency spike for every message
// in that second.
func firstPingIn(interval time.Duration) time.Duration {
	return 1 + rand.N(interval)
}

// wheel holds each connection until its next check, in slots of width ns:
// a hashed timing wheel. A check due further ahead than the wheel reaches
// waits in its farthest slot and is put back from there.
type wheel struct {
	width int64
	slots [][]*wsConn
	cur   int   // the next slot to run
	end   int64 // when slot cur ends (sinceStart)
}

// maxWheelSlots bounds the wheel's size: 1,024 slots of 100 ms reach past
// the default keepalive timeout (55 s).
const maxWheelSlots = 1024

func newWheel(c *Config, now int64) *wheel {
	width := max(min(c.PingInterval/8, c.KeepaliveTimeout/8, 100*time.Millisecond), time.Millisecond)
	n := min(int(max(c.PingInterval, c.KeepaliveTimeout)/width)+2, maxWheelSlots)
	return &wheel{width: int64(width), slots: make([][]*wsConn, n), end: now + int64(width)}
}

// add puts c in the slot of its check at due, the current one at the
// soonest, and at the farthest the one before the current (a full turn).
func (w *wheel) add(c *wsConn, due int64) {
	ahead := max(due-(w.end-w.width), 0) / w.width
	i := (w.cur + int(min(ahead, int64(len(w.slots)-1)))) % len(w.slots)
	c.slot, c.index = i, len(w.slots[i])
	w.slots[i] = append(w.slots[i], c)
}

// remove takes c out of its slot, if it is in one, moving the slot's last
// connection into its place.
func (w *wheel) remove(c *wsConn) {
	if c.slot < 0 {
		return // dropped by its last check
	}
	s := w.slots[c.slot]
	last := s[len(s)-1]
	s[c.index], last.index = last, c.index
	s[len(s)-1] = nil
	w.slots[c.slot] = s[:len(s)-1]
	c.slot = -1
}

// run checks the connections of every slot that has ended by now, with
// check, which returns when each is due next, or false to drop it.
func (w *wheel) run(now int64, check func(c *wsConn, now int64) (int64, bool)) {
	for w.end <= now {
		i := w.cur
		due := w.slots[i]
		w.slots[i] = nil
		w.cur = (i + 1) % len(w.slots)
		w.end += w.width
		for j, c := range due {
			due[j] = nil
			c.slot = -1
			if next, ok := check(c, now); ok {
				w.add(c, next)
			}
		}
		// The slot keeps its array for its next turn, unless a check
		// put a connection there (a full turn ahead) meanwhile.
		if w.slots[i] == nil {
			w.slots[i] = due[:0]
		}
	}
}

// keepAlive runs the wheel every slot until stop closes.
func (s *Server) keepAlive(stop <-chan struct{}) {
	tick := time.NewTicker(time.Duration(s.wheel.width))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		s.wheel.run(sinceStart(), s.checkAlive)
		s.mu.Unlock()
	}
}

// checkAlive ends c if it was silent too long, or asks for its ping when
// one is due; it returns when c is due for its next check.
func (s *Server) checkAlive(c *wsConn, now int64) (int64, bool) {
	if now > c.heard.Load()+int64(s.cfg.KeepaliveTimeout) {
		_ = c.nc.SetReadDeadline(longAgo)
		return 0, false
	}
	if now >= c.pingAt {
		c.pingAt = now + int64(s.cfg.PingInterval)
		c.actor.Ping()
	}
	return s.nextCheck(c), true
}

// nextCheck is when c is due for a check: its next ping, or the moment it
// will have been silent too long, whichever comes first.
func (s *Server) nextCheck(c *wsConn) int64 {
	return min(c.pingAt, c.heard.Load()+int64(s.cfg.KeepaliveTimeout)+1)
}

// watch puts a new connection in the wheel, under mu; OnClose takes it out.
func (s *Server) watch(c *wsConn) { s.wheel.add(c, s.nextCheck(c)) }
