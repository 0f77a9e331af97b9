package edge

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the wrapper of every connection fasthttp serves, which
// gives the edge three things fasthttp does not:
//   - an upgrade detaches the connection, so fasthttp's Close leaves the
//     WebSocket open (detach);
//   - a request refused before it was read to the end is answered, not
//     reset (lingerOnClose);
//   - Shutdown cuts the reads of every connection still served, so that a
//     client that sent half a request does not hold it for ReadTimeout
//     (servedConns.cutReads).
//
// fasthttp serves each connection on one goroutine, which calls Close and
// the deadline setters; Shutdown's cut comes from another, hence atomics
// and the set's lock.

// detachListener hands fasthttp connections that an upgrade can detach,
// and registers them in served.
type detachListener struct {
	net.Listener
	served *servedConns
}

func (l detachListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		// fasthttp recognises TLS by the methods of *tls.Conn.
		w := &detachableTLSConn{detachableConn: detachableConn{Conn: tc}, tls: tc}
		l.served.add(&w.detachment, tc)
		return w, nil
	}
	w := &detachableConn{Conn: c}
	l.served.add(&w.detachment, c)
	return w, nil
}

// servedConns is the set of connections fasthttp serves: accepted, and
// neither closed nor detached by an upgrade.
type servedConns struct {
	// lingerTimeout is lingerTimeout when the server was made: a
	// connection lingers on fasthttp's goroutine, which Shutdown does not
	// wait for, so it must not read a variable a test restores after it.
	lingerTimeout time.Duration
	mu            sync.Mutex
	cut           bool                     // set by cutReads; guarded by mu
	conns         map[*detachment]struct{} // guarded by mu
}

func (s *servedConns) add(d *detachment, c net.Conn) {
	d.conn, d.served = c, s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		d.cutReads() // accepted while Shutdown closed the listener
		return
	}
	if s.conns == nil {
		s.conns = make(map[*detachment]struct{})
	}
	s.conns[d] = struct{}{}
}

func (s *servedConns) remove(d *detachment) {
	s.mu.Lock()
	delete(s.conns, d)
	s.mu.Unlock()
}

// cutReads ends every read of a served connection, now and later, with a
// timeout. Shutdown calls it once new requests are refused anyway: a
// request whose head or body is still arriving then gets 503 draining
// (httpError), and an idle keep-alive connection is closed. A request
// already read is still answered.
func (s *servedConns) cutReads() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = true
	for d := range s.conns {
		d.cutReads()
	}
}

// detacher is a connection whose Close and deadline setters do nothing
// once detached: fasthttp resets the deadlines of a hijacked connection and
// closes it when the hijack handler returns (KeepHijackedConns off), and
// an upgraded WebSocket must outlive that, with its own deadlines. This
// lets fasthttp recycle its 8 KiB request reader, which otherwise was two
// thirds of a connect's garbage (GC work, and GC headroom in memory per
// connection).
type detacher interface {
	// detach returns the connection, which the caller now owns and closes.
	detach() net.Conn
	// lingerOnClose makes Close half-close and drain the connection first
	// (see lingeringClose). Called by httpError, on the serving goroutine.
	lingerOnClose()
}

// detachment is the state both detachable connection types share: two
// types, because fasthttp recognises TLS by the methods of *tls.Conn.
type detachment struct {
	conn     net.Conn     // the wrapped connection; set by servedConns.add
	served   *servedConns // set by servedConns.add
	detached atomic.Bool
	cut      atomic.Bool // reads are cut: see servedConns.cutReads
	linger   bool        // see lingerOnClose; touched only by the serving goroutine
}

func (d *detachment) lingerOnClose() { d.linger = true }

// detach marks the connection detached and returns it (see detacher).
func (d *detachment) detach() net.Conn {
	d.served.remove(d)
	d.detached.Store(true)
	return d.conn
}

// close closes the connection unless it was detached. A lingering
// connection stays in the set meanwhile, so that Shutdown's cut ends its
// lingering too.
func (d *detachment) close() error {
	if d.detached.Load() {
		return nil
	}
	if d.linger {
		d.lingeringClose()
	}
	d.served.remove(d)
	return d.conn.Close()
}

// longAgo is the read deadline of a cut connection.
var longAgo = time.Unix(1, 0)

func (d *detachment) cutReads() {
	d.cut.Store(true)
	_ = d.conn.SetReadDeadline(longAgo)
}

// keepCut follows each deadline fasthttp sets (it sets one before every
// request): once reads are cut, the read deadline stays in the past. cut is
// stored before cutReads sets its deadline and loaded after fasthttp set
// its own, so whichever comes second, a cut is never overwritten.
func (d *detachment) keepCut(err error) error {
	if d.cut.Load() {
		_ = d.conn.SetReadDeadline(longAgo)
	}
	return err
}

// setDeadline is what the deadline setters fasthttp calls do: set the
// deadline, keeping a cut, unless the connection is detached, whose
// deadlines are the WebSocket's.
func (d *detachment) setDeadline(set func(time.Time) error, t time.Time) error {
	if d.detached.Load() {
		return nil
	}
	return d.keepCut(set(t))
}

// A refused request's connection lingers at most this long, reading and
// discarding at most lingerBytes, before it is closed.
var (
	lingerTimeout = 2 * time.Second // a variable for a test's sake: read by New
	lingerBytes   = int64(64 << 20)
)

// lingeringClose prepares the connection, whose request fasthttp refused
// before reading all of it (a body over the limit, headers too large), for
// Close. Closing a socket with unread input makes the kernel send a reset,
// not an end of stream, and a client still writing its body then gets
// "connection reset by peer" instead of the 413 already sent: the clear
// error is lost. So the response is followed by an end of stream
// (half-close), and what the client still sends is read and discarded
// until it closes, lingerBytes, or lingerTimeout, as Apache's lingering
// close does.
// Over TLS both steps act on the TCP socket: the bytes are discarded, not
// decrypted, and the client already has the response. A cut (Shutdown) ends
// it, as it ends any read.
func (d *detachment) lingeringClose() {
	c := transport(d.conn)
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok || hc.CloseWrite() != nil || d.keepCut(c.SetReadDeadline(time.Now().Add(d.served.lingerTimeout))) != nil {
		return
	}
	_, _ = io.CopyN(io.Discard, c, lingerBytes)
}

// fasthttp serves a connection as TLS (IsTLS, no plain-HTTP error on an
// unfinished handshake) when it has these methods of *tls.Conn.
var _ interface {
	Handshake() error
	ConnectionState() tls.ConnectionState
} = (*detachableTLSConn)(nil)

type detachableConn struct {
	net.Conn
	detachment
}

func (c *detachableConn) Close() error { return c.close() }
func (c *detachableConn) SetDeadline(t time.Time) error {
	return c.setDeadline(c.Conn.SetDeadline, t)
}
func (c *detachableConn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(c.Conn.SetReadDeadline, t)
}
func (c *detachableConn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(c.Conn.SetWriteDeadline, t)
}

// detachableTLSConn is a detachableConn of a *tls.Conn with the two
// methods by which fasthttp recognises TLS.
type detachableTLSConn struct {
	detachableConn
	tls *tls.Conn
}

func (c *detachableTLSConn) Handshake() error                     { return c.tls.Handshake() }
func (c *detachableTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }
