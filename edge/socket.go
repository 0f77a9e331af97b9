package edge

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lxzan/gws"
)

// socket is the actors.Socket of one WebSocket. It writes data and ping
// frames itself, straight to the connection, rather than through gws: a
// non-blocking write (TryWrite) lets the goroutine that queued a message,
// usually its channel's actor, write it at once, with no goroutine started
// and no deadline set per write. gws still writes its own frames (the 101,
// pongs, the close frames of protocol errors) through writeLocked, a
// net.Conn whose Write takes the same mutex, so no two frames ever
// interleave on the wire.
//
// Concurrency: every write holds mu, so writes never overlap; Close may run
// beside a blocked write, which its deadline then cuts short.
type socket struct {
	// Static after newSocket.
	nc           net.Conn        // the raw connection (a *tls.Conn for TLS)
	raw          syscall.RawConn // nil when writes cannot be non-blocking (TLS)
	writeTimeout time.Duration
	writeFD      func(fd uintptr) bool // s.writeOnce, bound once, for raw.Write

	// gws is set once the upgrade succeeded, before any frame is written.
	gws *gws.Conn

	// closing is set by Close before it sets its own write deadline, which
	// later writes must then keep.
	closing atomic.Bool

	mu sync.Mutex
	// Guarded by mu.
	upgraded bool // the 101 is written: every later write is a frame
	closed   bool // a close frame is written: nothing may follow it
	// pending is what a non-blocking write left unwritten of its frame;
	// held is the pooled buffer it points into.
	pending []byte
	held    *[]byte
	// wbuf, wn and werr carry writeOnce's argument and results.
	wbuf []byte
	wn   int
	werr error
}

// errSocketClosed is what a write gets after the close frame.
var errSocketClosed = errors.New("edge: websocket closed")

func newSocket(nc net.Conn, writeTimeout time.Duration) *socket {
	s := &socket{nc: nc, writeTimeout: writeTimeout}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
			s.writeFD = s.writeOnce
		}
	}
	return s
}

// writeLocked is the net.Conn that gws writes through.
type writeLocked struct {
	net.Conn
	s *socket
}

func (w writeLocked) Write(p []byte) (int, error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errSocketClosed
	}
	if err := s.flushPendingLocked(); err != nil {
		return 0, err
	}
	// gws writes one whole frame per call; opcode 8 is a close.
	if s.upgraded && len(p) > 0 && p[0]&0x0f == 0x8 {
		s.closed = true
	}
	if err := s.writeBlockingLocked(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// setUpgraded records the gws connection once its 101 is written.
func (s *socket) setUpgraded(c *gws.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gws, s.upgraded = c, true
}

func (s *socket) TryWrite(parts [][]byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, errSocketClosed
	}
	buf := frame(0x81, parts) // FIN + text
	if s.pending != nil || s.raw == nil {
		s.keepLocked(buf, 0)
		return false, nil
	}
	s.wbuf = *buf
	err := s.raw.Write(s.writeFD)
	n, werr := s.wn, s.werr
	s.wbuf, s.werr = nil, nil
	if err == nil && !errors.Is(werr, syscall.EAGAIN) {
		err = werr
	}
	if err != nil {
		putBuffer(buf)
		return false, err
	}
	if n == len(*buf) {
		putBuffer(buf)
		return true, nil
	}
	s.keepLocked(buf, n)
	return false, nil
}

// writeOnce is one non-blocking write of s.wbuf; raw.Write calls it with
// the file descriptor, which Go keeps in non-blocking mode.
func (s *socket) writeOnce(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), s.wbuf)
		if err == syscall.EINTR {
			continue
		}
		s.wn, s.werr = max(n, 0), err
		return true // never wait: the caller falls back to a writer goroutine
	}
}

// keepLocked makes the unwritten rest of buf, from n on, pending.
func (s *socket) keepLocked(buf *[]byte, n int) {
	if s.pending == nil {
		s.pending, s.held = (*buf)[n:], buf
		return
	}
	s.pending = append(s.pending, (*buf)[n:]...) // rare: only without a raw fd
	putBuffer(buf)
}

func (s *socket) Write(parts [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errSocketClosed
	}
	if err := s.flushPendingLocked(); err != nil || len(parts) == 0 {
		return err
	}
	buf := frame(0x81, parts)
	err := s.writeBlockingLocked(*buf)
	putBuffer(buf)
	return err
}

var pingFrame = []byte{0x89, 0x00} // FIN + ping, no payload

func (s *socket) WritePing() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errSocketClosed
	}
	if err := s.flushPendingLocked(); err != nil {
		return err
	}
	return s.writeBlockingLocked(pingFrame)
}

// Close bounds the close frame's write by timeout: a client that stopped
// reading must not keep a goroutine (and the write lock) forever. The
// deadline also cuts short a write stuck on the same client.
func (s *socket) Close(code uint16, timeout time.Duration) {
	s.closing.Store(true)
	_ = s.nc.SetWriteDeadline(time.Now().Add(timeout))
	_ = s.gws.WriteClose(code, nil) // through writeLocked; gws then closes nc
}

func (s *socket) flushPendingLocked() error {
	if s.pending == nil {
		return nil
	}
	err := s.writeBlockingLocked(s.pending)
	putBuffer(s.held)
	s.pending, s.held = nil, nil
	return err
}

// writeBlockingLocked writes p whole, waiting at most writeTimeout (or, once
// Close has begun, until Close's deadline).
func (s *socket) writeBlockingLocked(p []byte) error {
	if !s.closing.Load() {
		if err := s.nc.SetWriteDeadline(time.Now().Add(s.writeTimeout)); err != nil {
			return err
		}
	}
	_, err := s.nc.Write(p)
	return err
}

// frame encodes parts, concatenated, as one unmasked server frame with the
// given first byte (FIN and opcode), in a pooled buffer: copying is far
// cheaper than a write() per part, and one buffer makes a partial write
// easy to finish.
func frame(first byte, parts [][]byte) *[]byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	buf := getBuffer(n + 10)
	b := append((*buf)[:0], first)
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	for _, p := range parts {
		b = append(b, p...)
	}
	*buf = b
	return buf
}

// maxPooledBuffer keeps the pool from pinning the buffer of a rare huge
// batch.
const maxPooledBuffer = 64 << 10

var bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuffer(n int) *[]byte {
	buf := bufferPool.Get().(*[]byte)
	if cap(*buf) < n {
		*buf = make([]byte, 0, n)
	}
	return buf
}

func putBuffer(buf *[]byte) {
	if cap(*buf) <= maxPooledBuffer {
		*buf = (*buf)[:0]
		bufferPool.Put(buf)
	}
}
