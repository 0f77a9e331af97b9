package edge

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/VictoriaMetrics/metrics"
	"github.com/lxzan/gws"
)

// socket is the actors.Socket of one WebSocket. It writes data and ping
// frames itself, straight to the connection, rather than through gws: a
// non-blocking writev (TryWrite) lets the goroutine that queued a message,
// usually its channel's actor, write it at once, with no goroutine started,
// no deadline set and no copy made per write; the frames written are the
// ones every subscriber shares. gws still writes its own frames (the 101,
// pongs, the close frames of protocol errors) through writeLocked, a
// net.Conn whose Write takes the same mutex, so no two frames ever
// interleave on the wire. Over TLS the same holds: a frame is encrypted
// into records that the socket takes from the connection under the TLS
// one (recordConn) and writes with the same writev.
//
// Concurrency: every write holds mu, so writes never overlap; Close may run
// beside a blocked write, which its deadline then cuts short. TryWrite
// never waits for mu: a blocking write holding it (gws's pong to a client
// that does not read, say) must not hold up the channel that flushes.
// The first failed write closes the socket for writing: a frame cut short
// leaves nothing that could follow it on the wire.
type socket struct {
	// Static after newSocket.
	nc  net.Conn        // the raw connection (a *tls.Conn for TLS)
	raw syscall.RawConn // the TCP socket's; nil when there is none to write to directly
	// tls and records are set over TLS: the socket encrypts each frame
	// with tls, and takes the records from records, its connection.
	tls          *tls.Conn
	records      *recordConn
	writeTimeout time.Duration
	controlFD    func(fd uintptr) // s.writev for raw.Control, bound once: non-blocking writes are the common path
	// blocked counts the frames the kernel could not take at once (see
	// writev); nil counts nothing.
	blocked *metrics.Counter

	// closeBy is Close's write deadline (Unix ns), 0 before Close: later
	// blocking writes must not extend it.
	closeBy atomic.Int64

	mu sync.Mutex
	// Guarded by mu.
	// gws is set once the 101 is written; every later write is a frame.
	gws *gws.Conn
	// closed: a close frame is written, or a write failed; no more writes.
	closed bool
	// hdr is the header of the frame being written. pending is what is
	// left of that frame (hdr, then the parts); a TryWrite that could not
	// finish leaves it for the next Write. held is the pooled slice that
	// pending is cut from.
	hdr     [10]byte
	pending [][]byte
	held    *[][]byte
	// sealed is the pooled buffer of the pending frame's TLS records.
	sealed *[]byte
	// waited: the kernel refused part of the pending frame at least once,
	// and blocked counted it.
	waited bool
	// wait and werr are writev's mode and result.
	wait bool
	werr error
}

// errSocketClosed is what a write gets after the close frame.
var errSocketClosed = errors.New("edge: websocket closed")

func newSocket(nc net.Conn, writeTimeout time.Duration, blocked *metrics.Counter) *socket {
	s := &socket{nc: nc, writeTimeout: writeTimeout, blocked: blocked}
	if tc, ok := nc.(*tls.Conn); ok {
		rc, ok := tc.NetConn().(*recordConn)
		if !ok {
			return s // no records to take: every write goes through TLS
		}
		rc.startCapture()
		s.tls, s.records = tc, rc
	}
	if sc, ok := transport(nc).(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
			s.controlFD = func(fd uintptr) { s.writev(fd) }
		}
	}
	return s
}

// writeLocked is the net.Conn that gws writes through.
type writeLocked struct {
	net.Conn
	s *socket
}

// Close is how gws closes the connection after its close frame. A TLS
// connection's own Close first writes a close_notify alert under a fixed
// 5 s deadline of crypto/tls's, which replaces Close's (cutWritesAt): a
// client that stopped reading would hold the connection, its count and
// Shutdown 5 s past the close timeout. The WebSocket close frame already
// ended the stream, so the TCP connection is closed directly.
func (w writeLocked) Close() error {
	return transport(w.Conn).Close()
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
	if s.gws != nil && len(p) > 0 && p[0]&0x0f == 0x8 {
		s.closed = true
	}
	if err := s.writeConnLocked(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// setUpgraded records the gws connection once its 101 is written.
func (s *socket) setUpgraded(c *gws.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gws = c
}

func (s *socket) TryWrite(parts [][]byte) (taken, done bool, err error) {
	if !s.mu.TryLock() {
		return false, false, nil // another write holds the socket
	}
	defer s.mu.Unlock()
	if s.closed {
		return false, false, errSocketClosed
	}
	if s.pending != nil {
		panic("BUG: edge: TryWrite before the rest of the last frame was written")
	}
	if s.raw == nil {
		// No descriptor to write without blocking: Write, on the
		// caller's writer goroutine, writes it. Taking the frame here
		// would count every such write as one that blocked.
		return false, false, nil
	}
	if err := s.setFrameLocked(finText, parts); err != nil {
		return true, false, err
	}
	if err := s.writevLocked(false); err != nil {
		return true, false, err
	}
	return true, s.pending == nil, nil
}

// The first bytes of the frames the socket writes: FIN and the opcode.
const (
	finText = 0x81
	finPing = 0x89
	finPong = 0x8A
	noFrame = 0 // writeFrame: only what a TryWrite left
)

func (s *socket) Write(parts [][]byte) error {
	if len(parts) == 0 {
		return s.writeFrame(noFrame, nil)
	}
	return s.writeFrame(finText, parts)
}

func (s *socket) WritePing() error { return s.writeFrame(finPing, nil) }

// WritePong echoes payload, at most 125 bytes: gws refuses a longer ping.
func (s *socket) WritePong(payload []byte) error {
	return s.writeFrame(finPong, [][]byte{payload})
}

// writeFrame writes what a TryWrite left, then parts, concatenated, as one
// frame that starts with fin (none for noFrame), blocking.
func (s *socket) writeFrame(fin byte, parts [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errSocketClosed
	}
	if err := s.flushPendingLocked(); err != nil || fin == noFrame {
		return err
	}
	if err := s.setFrameLocked(fin, parts); err != nil {
		return err
	}
	return s.flushPendingLocked()
}

// Close bounds the close frame's write by timeout: a client that stopped
// reading must not keep a goroutine (and the write lock) forever. The
// deadline also cuts short a write stuck on the same client.
func (s *socket) Close(code uint16, timeout time.Duration) {
	s.cutWritesAt(time.Now().Add(timeout))
	_ = s.gws.WriteClose(code, nil) // through writeLocked; gws then closes nc
}

// cutWritesAt makes every write end by at the latest: the one under way
// and, through setDeadline, the ones after it.
func (s *socket) cutWritesAt(by time.Time) {
	s.closeBy.Store(by.UnixNano())
	_ = s.nc.SetWriteDeadline(by)
}

// setDeadline gives a blocking write writeTimeout, or what is left of
// Close's deadline when that is sooner. Close may store its deadline
// between the load and the set here: looking again after the set keeps it.
func (s *socket) setDeadline() error {
	d := time.Now().Add(s.writeTimeout).UnixNano()
	for {
		if by := s.closeBy.Load(); by != 0 {
			d = min(d, by)
		}
		if err := s.nc.SetWriteDeadline(time.Unix(0, d)); err != nil {
			return err
		}
		if by := s.closeBy.Load(); by == 0 || by >= d {
			return nil
		}
	}
}

// setFrameLocked makes parts, concatenated, the pending frame, which
// starts with fin: as they are, or, over TLS, encrypted (sealLocked). An
// error closes the socket.
func (s *socket) setFrameLocked(fin byte, parts [][]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	h := append(s.hdr[:0], fin) // server frames are not masked
	switch {
	case n < 126:
		h = append(h, byte(n))
	case n <= 0xffff:
		h = append(h, 126)
		h = binary.BigEndian.AppendUint16(h, uint16(n))
	default:
		h = append(h, 127)
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	if s.records != nil {
		return s.sealLocked(h, parts)
	}
	s.pendLocked(h, parts)
	return nil
}

// pendLocked makes first and then rest, in a pooled slice, the pending
// bytes of a frame.
func (s *socket) pendLocked(first []byte, rest [][]byte) {
	s.held = iovecPool.Get().(*[][]byte)
	s.pending = (*s.held)[:0]
	if len(first) > 0 { // an empty iovec would never be consumed
		s.pending = append(s.pending, first)
	}
	for _, p := range rest {
		if len(p) > 0 {
			s.pending = append(s.pending, p)
		}
	}
	*s.held = s.pending // what release clears, and a grown array to reuse
	s.waited = false
}

// sealLocked makes head and then parts, encrypted into TLS records, the
// pending bytes. crypto/tls writes the records to s.records, which keeps
// them (see recordConn), so encrypting never waits for the network; the
// frame is put together first, so that it makes as few records as its
// size allows.
func (s *socket) sealLocked(head []byte, parts [][]byte) error {
	plain := bufferPool.Get().(*[]byte)
	b := append((*plain)[:0], head...)
	for _, p := range parts {
		b = append(b, p...)
	}
	sealed := bufferPool.Get().(*[]byte)
	s.records.collect(*sealed)
	_, err := s.tls.Write(b)
	*sealed = s.records.take()
	putBuffer(plain, b)
	if err != nil {
		putBuffer(sealed, *sealed)
		s.closed = true
		return err
	}
	s.sealed = sealed
	s.pendLocked(*sealed, nil)
	return nil
}

// flushPendingLocked writes what is pending, blocking.
func (s *socket) flushPendingLocked() error {
	if s.pending == nil {
		return nil
	}
	if s.raw != nil {
		return s.writevLocked(true)
	}
	// Without a file descriptor: one copy, so that the frame is one
	// write.
	buf := bufferPool.Get().(*[]byte)
	b := (*buf)[:0]
	for _, p := range s.pending {
		b = append(b, p...)
	}
	s.releasePendingLocked()
	err := s.writeConnLocked(b)
	putBuffer(buf, b)
	return err
}

// putBuffer returns b, grown from *buf, to the pool, unless it grew too
// large to keep.
func putBuffer(buf *[]byte, b []byte) {
	if cap(b) <= maxPooledBuffer {
		*buf = b[:0]
		bufferPool.Put(buf)
	}
}

// writevLocked writes pending with writev until it is all written, or,
// unless wait, until the socket takes no more. Waiting honours a fresh
// write deadline. Not waiting goes through raw.Control, not raw.Write:
// Write would fail at once on the lapsed deadline of an earlier blocking
// write (a ping's, say), and a non-blocking write needs no deadline.
func (s *socket) writevLocked(wait bool) error {
	s.wait, s.werr = wait, nil
	var err error
	if wait {
		if err = s.setDeadline(); err == nil {
			err = s.raw.Write(s.writev) // rare: a method value per blocking write
		}
	} else {
		err = s.raw.Control(s.controlFD)
	}
	if err == nil {
		err = s.werr
	}
	s.werr = nil
	if err != nil || len(s.pending) == 0 {
		s.releasePendingLocked()
	}
	s.closed = s.closed || err != nil
	return err
}

// maxIovecs bounds one writev call (Linux allows 1,024): the iovec array
// lives on the stack.
const maxIovecs = 64

// writev is what raw.Write calls with the file descriptor, which Go keeps
// in non-blocking mode. It returns false to wait until the socket is
// writable, true when done (s.werr says how).
//
// The first time the kernel refuses part of a frame, the frame counts as a
// write that blocked: whether a TryWrite then leaves the rest to Write, or
// a Write (a writer goroutine's, one that never tried without blocking)
// waits for it. Over TLS (no descriptor) nothing is counted.
func (s *socket) writev(fd uintptr) bool {
	for len(s.pending) > 0 {
		var iov [maxIovecs]syscall.Iovec
		n := 0
		for _, p := range s.pending[:min(len(s.pending), maxIovecs)] {
			iov[n].Base = unsafe.SliceData(p)
			iov[n].SetLen(len(p))
			n++
		}
		r, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		switch errno {
		case 0:
			s.consumeLocked(int(r))
		case syscall.EINTR:
		case syscall.EAGAIN:
			if !s.waited {
				s.waited = true
				if s.blocked != nil {
					s.blocked.Inc()
				}
			}
			return !s.wait
		default:
			s.werr = errno
			return true
		}
	}
	return true
}

// consumeLocked drops the first n written bytes from pending.
func (s *socket) consumeLocked(n int) {
	for n > 0 && len(s.pending) > 0 {
		if p := s.pending[0]; n < len(p) {
			s.pending[0] = p[n:]
			return
		}
		n -= len(s.pending[0])
		s.pending = s.pending[1:]
	}
}

// releasePendingLocked drops pending and returns its slice to the pool,
// cleared so that the pool pins no frame.
func (s *socket) releasePendingLocked() {
	if s.sealed != nil {
		putBuffer(s.sealed, *s.sealed)
		s.sealed = nil
	}
	if s.held == nil {
		return
	}
	clear(*s.held) // the frames it pointed at, not the pool's whole array
	if cap(*s.held) <= maxPooledIovecs {
		*s.held = (*s.held)[:0]
		iovecPool.Put(s.held)
	}
	s.pending, s.held = nil, nil
}

// writeConnLocked writes p whole through the connection, waiting at most
// writeTimeout (or, once Close has begun, until Close's deadline). Over
// TLS it is sealed and written as a frame is.
func (s *socket) writeConnLocked(p []byte) error {
	if s.records != nil {
		err := s.sealLocked(p, nil)
		if err == nil {
			err = s.flushPendingLocked()
		}
		return err
	}
	err := s.setDeadline()
	if err == nil {
		_, err = s.nc.Write(p)
	}
	s.closed = s.closed || err != nil
	return err
}

// Pools keep a steady stream of writes free of allocations, without
// pinning the buffers of a rare huge batch.
const (
	maxPooledIovecs = 4 << 10
	maxPooledBuffer = 64 << 10
)

var (
	iovecPool  = sync.Pool{New: func() any { b := make([][]byte, 0, 16); return &b }}
	bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
)
