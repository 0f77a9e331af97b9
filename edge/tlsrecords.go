package edge

import (
	"crypto/tls"
	"net"
	"sync"
)

// recordListener hands crypto/tls connections that it can take records
// from: ServeTLS puts it between the TCP listener and tls.NewListener.
type recordListener struct{ net.Listener }

func (l recordListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordConn{Conn: c}, nil
}

// recordConn is the TCP connection under a TLS one. crypto/tls writes each
// record it encrypts to it. Until a WebSocket's socket captures it, a
// record goes straight to TCP (the handshake, HTTPS answers); once
// captured, it is kept in out, and the socket takes it and writes it with
// its non-blocking writev, as it writes a plain connection's frames. So
// over TLS too, a channel writes a subscriber's frame on its own
// goroutine when the socket has room, with no writer goroutine and no
// deadline per write, and what queues meanwhile goes out in one write.
//
// Concurrency: the socket encrypts and takes under its own mutex; the
// gws read loop may have crypto/tls write a record too (a TLS 1.3 key
// update's answer, an alert), hence mu. crypto/tls writes one record at a
// time under its own lock, so out holds them in the order of their keys;
// one written by the read loop goes out ahead of the next frame.
type recordConn struct {
	net.Conn
	mu      sync.Mutex
	capture bool   // guarded by mu
	out     []byte // records not yet taken; guarded by mu
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.capture {
		c.out = append(c.out, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// startCapture keeps every record written from now on for take. The
// caller owns every write to the connection from then on.
func (c *recordConn) startCapture() {
	c.mu.Lock()
	c.capture = true
	c.mu.Unlock()
}

// collect has the records written from now on appended to buf, after any
// still waiting.
func (c *recordConn) collect(buf []byte) {
	c.mu.Lock()
	c.out = append(buf[:0], c.out...)
	c.mu.Unlock()
}

// take returns the records written so far, in order, and forgets them.
func (c *recordConn) take() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.out
	c.out = nil
	return out
}

// transport is the TCP connection under nc: nc itself, or the one under
// its TLS.
func transport(nc net.Conn) net.Conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if rc, ok := nc.(*recordConn); ok {
		nc = rc.Conn
	}
	return nc
}
