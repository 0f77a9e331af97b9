package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/realtime-relay/realtime/internal/wsframe"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// readBufferBytes is each subscriber's bufio size: server frames of the
// bench are small, and this is paid per connection.
const readBufferBytes = 2 << 10

// pongTimeout bounds writing a pong.
const pongTimeout = 5 * time.Second

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// errClosed is returned by readFrame when the server sent a close frame;
// closeError carries its code.
var errClosed = errors.New("bench: server closed the WebSocket")

// closeError is a close frame received from the server.
type closeError struct{ code uint16 }

func (e closeError) Error() string {
	return fmt.Sprintf("bench: server closed the WebSocket with %d", e.code)
}
func (e closeError) Unwrap() error { return errClosed }

// upgradeError is a non-101 answer to the upgrade request.
type upgradeError struct{ status int }

func (e upgradeError) Error() string { return fmt.Sprintf("bench: upgrade answered HTTP %d", e.status) }

// wsConn is a minimal client side of a WebSocket: enough of RFC 6455 to
// subscribe and to read the relay's text frames fast. Frames are parsed
// from in, which is filled either by blocking reads (readMessage, on a
// reader goroutine) or by one non-blocking read per readiness (readOnce,
// on a poller): the same parser serves both.
//
// Must only be used by one goroutine at a time: the dialer, then its reader
// (or poller). close and shutdown may be called from any goroutine (they
// only write a close frame and close or shut down the socket).
type wsConn struct {
	nc net.Conn
	rc syscall.RawConn // nc's, for readOnce; nil over TLS
	// in holds the bytes read and not yet parsed, from in[r:]; a message
	// returned by nextMessage points into it until the next read.
	in []byte
	r  int
	// readErr is the error of the last blocking read, returned once the
	// bytes read with it are parsed.
	readErr error
	// readOnce's read of the socket, bound once, and its arguments and
	// results.
	readFD func(fd uintptr) bool
	rawBuf []byte
	rawN   int
	rawErr error
	out    []byte // reused outgoing frame
}

// dialer opens subscriber connections to one relay.
type dialer struct {
	// Static after construction.
	host     string // host:port to dial
	tls      *tls.Config
	path     string // "/v1/ws?token=" without the token
	sources  []*net.TCPAddr
	timeout  time.Duration
	hostName string // Host header
}

func newDialer(base *url.URL, roots *x509.CertPool, sourceAddrs int, timeout time.Duration) *dialer {
	d := &dialer{host: hostPort(base), hostName: base.Host, path: "/v1/ws?token=", timeout: timeout, tls: tlsConfig(base, roots)}
	// Spread source addresses only when the target is IPv4 loopback: a
	// 127.0.0.x source cannot reach anything else.
	if ip := net.ParseIP(base.Hostname()); ip != nil && ip.To4() != nil && ip.IsLoopback() {
		for i := range sourceAddrs {
			d.sources = append(d.sources, &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))})
		}
	}
	return d
}

// hostPort is the address to dial for base: its host and port, the
// scheme's default port when it has none.
func hostPort(base *url.URL) string {
	if base.Port() != "" {
		return base.Host
	}
	return net.JoinHostPort(base.Hostname(), map[bool]string{true: "443", false: "80"}[base.Scheme == "https"])
}

// tlsConfig is the client TLS configuration for base, nil for http; roots
// nil means the system's CAs.
func tlsConfig(base *url.URL, roots *x509.CertPool) *tls.Config {
	if base.Scheme != "https" {
		return nil
	}
	return &tls.Config{ServerName: base.Hostname(), RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// dial opens connection number n (which picks its source address) and
// upgrades it with token. A cramped connection has a small receive buffer
// and segment size (see cramp).
func (d *dialer) dial(ctx context.Context, n int, token string, cramped bool) (*wsConn, error) {
	// No TCP keepalive: a run is bounded and the relay pings, and Go's
	// default costs four setsockopt calls per dial, on the cores the relay
	// is measured on.
	nd := net.Dialer{Timeout: d.timeout, KeepAlive: -1}
	if len(d.sources) > 0 {
		nd.LocalAddr = d.sources[n%len(d.sources)]
	}
	if cramped {
		nd.Control = cramp
	}
	nc, err := nd.DialContext(ctx, "tcp", d.host)
	if err != nil {
		return nil, err
	}
	if d.tls != nil {
		nc = tls.Client(nc, d.tls)
	}
	c := &wsConn{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
	}
	if err := c.handshake(d, token); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

// handshakeReaders pools the readers of 101 responses: a connection needs
// one only until its upgrade is done.
var handshakeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferBytes) }}

// Socket sizes of a cramped connection: what an internet client's socket
// holds, not loopback's.
const (
	crampedRcvBuf = 4 << 10 // the kernel doubles it
	crampedMSS    = 1400
)

// cramp shrinks a socket before it connects, for the slow scenario's
// clients that stop reading: with loopback's defaults (a 64 KiB segment
// size, from which the server's kernel sizes its send buffer at about
// 1.3 MiB, plus an autotuned receive buffer) the kernels would absorb
// minutes of a subscriber's messages before the relay's own queue saw
// any of it. With an internet-sized segment and a small receive buffer
// they hold some tens of KiB, so the run measures the relay's policy.
func cramp(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = errors.Join(
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, crampedRcvBuf),
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, crampedMSS))
	})
	return errors.Join(err, serr)
}

// handshake sends the upgrade request and checks the 101. It builds the
// request and reads the response head by hand, without net/http: the load
// generator shares the cores with the relay, and in a connect storm
// net/http's response parsing was a tenth of its CPU.
func (c *wsConn) handshake(d *dialer, token string) error {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	var key [24]byte
	base64.StdEncoding.Encode(key[:], nonce[:])
	_ = c.nc.SetDeadline(time.Now().Add(d.timeout))
	b := append(c.out[:0], "GET "...)
	b = append(b, d.path...)
	b = appendQueryValue(b, token)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, d.hostName...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	b = append(b, key[:]...)
	b = append(b, "\r\nSec-WebSocket-Version: 13\r\n\r\n"...)
	c.out = b
	if _, err := c.nc.Write(b); err != nil {
		return err
	}
	br := handshakeReaders.Get().(*bufio.Reader)
	br.Reset(c.nc)
	err := readUpgradeResponse(br, key[:])
	if err == nil {
		// Whatever came after the head is the first frames' bytes.
		rest, _ := br.Peek(br.Buffered())
		c.in = append(make([]byte, 0, readBufferBytes), rest...)
	}
	br.Reset(nil)
	handshakeReaders.Put(br)
	if err != nil {
		return err
	}
	return c.nc.SetDeadline(time.Time{})
}

// appendQueryValue appends s escaped for a URL query. A JWT is base64url
// and dots, which need no escaping, so the common case copies it as is.
func appendQueryValue(b []byte, s string) []byte {
	for i := range len(s) {
		ch := s[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return append(b, url.QueryEscape(s)...)
		}
	}
	return append(b, s...)
}

// readUpgradeResponse reads a response head from br and checks that it is
// a 101 whose Sec-WebSocket-Accept matches key and whose Upgrade is
// websocket (RFC 6455 4.1). A refusal is an upgradeError with its status.
func readUpgradeResponse(br *bufio.Reader, key []byte) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	// "HTTP/1.1 101 Switching Protocols"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return fmt.Errorf("bench: bad status line %q", bytes.TrimSpace(line))
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return fmt.Errorf("bench: bad status line %q", bytes.TrimSpace(line))
	}
	var accept, upgrade bool
	var in [24 + len(wsGUID)]byte
	sum := sha1.Sum(append(append(in[:0], key...), wsGUID...))
	var want [28]byte
	base64.StdEncoding.Encode(want[:], sum[:])
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return fmt.Errorf("bench: bad header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			accept = bytes.Equal(value, want[:])
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrade = bytes.EqualFold(value, []byte("websocket"))
		}
	}
	switch {
	case status != 101:
		return upgradeError{status}
	case !accept:
		return errors.New("bench: bad Sec-WebSocket-Accept")
	case !upgrade:
		return errors.New("bench: upgrade response without Upgrade: websocket")
	}
	return nil
}

// writeFrame sends one masked client frame (clients must mask, RFC 6455
// section 5.3). Must only be called by the connection's owner.
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	c.out = wsframe.AppendMasked(c.out[:0], op, payload)
	_, err := c.nc.Write(c.out)
	return err
}

// readMessage returns the next text message's payload, answering pings on
// the way, reading the socket as long as it must (blocking). The slice is
// valid until the next call. A close frame from the server returns a
// closeError.
func (c *wsConn) readMessage() ([]byte, error) {
	for {
		if p, ok, err := c.nextMessage(); ok || err != nil {
			return p, err
		}
		if c.readErr != nil {
			return nil, c.readErr
		}
		// A read may return bytes and an error together (TLS: a close
		// frame, then close_notify): the bytes are parsed first.
		n, err := c.nc.Read(c.room())
		c.in = c.in[:len(c.in)+n]
		c.readErr = err
	}
}

// readOnce reads what the socket holds without waiting for more: n is 0
// when it holds nothing (a spurious readiness). io.EOF when the server
// has closed it. A poller calls it when epoll says the socket is readable.
func (c *wsConn) readOnce() (n int, err error) {
	if c.readFD == nil {
		// Bound once: a closure handed to RawConn.Read escapes, and this
		// runs for every readiness of every socket.
		c.readFD = func(fd uintptr) bool {
			c.rawN, c.rawErr = syscall.Read(int(fd), c.rawBuf)
			return true // never wait in Go's poller: epoll is ours
		}
	}
	c.rawBuf = c.room()
	err = c.rc.Read(c.readFD)
	c.rawBuf = nil
	switch {
	case err != nil:
		return 0, err
	case c.rawErr == syscall.EAGAIN || c.rawErr == syscall.EINTR:
		return 0, nil
	case c.rawErr != nil:
		return 0, c.rawErr
	case c.rawN == 0:
		return 0, io.EOF
	}
	c.in = c.in[:len(c.in)+c.rawN]
	return c.rawN, nil
}

// room makes room in in and returns it: the parsed bytes dropped, and the
// buffer doubled when a frame fills it.
func (c *wsConn) room() []byte {
	if c.r > 0 {
		c.in = c.in[:copy(c.in, c.in[c.r:])]
		c.r = 0
	}
	if len(c.in) == cap(c.in) {
		grown := make([]byte, len(c.in), max(2*cap(c.in), readBufferBytes))
		copy(grown, c.in)
		c.in = grown
	}
	return c.in[len(c.in):cap(c.in)]
}

// nextMessage returns the next complete text message in what was read so
// far (ok=false when more bytes are needed), answering pings on the way.
// The slice is valid until the next read. A close frame from the server
// returns a closeError.
func (c *wsConn) nextMessage() (p []byte, ok bool, err error) {
	for {
		fin, op, payload, n, err := parseServerFrame(c.in[c.r:])
		if err != nil || n == 0 {
			return nil, false, err
		}
		c.r += n
		switch op {
		case opPing:
			// Bounded: on a poller, a pong that cannot be written would
			// hold up every connection of that poller.
			_ = c.nc.SetWriteDeadline(time.Now().Add(pongTimeout))
			if err := c.writeFrame(opPong, payload); err != nil {
				return nil, false, err
			}
		case opPong:
		case opClose:
			var code uint16 = 1005 // no status code present
			if len(payload) >= 2 {
				code = binary.BigEndian.Uint16(payload)
			}
			return nil, false, closeError{code}
		case opText, opBinary:
			if !fin {
				// Neither the relay nor the baseline (gws) fragments.
				return nil, false, errors.New("bench: a fragmented message from the server")
			}
			return payload, true, nil
		}
	}
}

// parseServerFrame parses the unmasked server frame at the start of b: n
// is its length in b, 0 when b does not hold all of it yet.
func parseServerFrame(b []byte) (fin bool, op byte, payload []byte, n int, err error) {
	fin, op, size, head, err := wsframe.ParseServerHead(b)
	if err != nil || head == 0 {
		return false, 0, nil, 0, err
	}
	switch op {
	case opText, opBinary, opClose, opPing, opPong:
	default:
		return false, 0, nil, 0, fmt.Errorf("bench: unexpected opcode %d", op)
	}
	if size > wsframe.MaxServerFrame {
		return false, 0, nil, 0, fmt.Errorf("%w: %d bytes", wsframe.ErrTooLarge, size)
	}
	end := head + int(size)
	if len(b) < end {
		return false, 0, nil, 0, nil
	}
	return fin, op, b[head:end], end, nil
}

// shutdown sends a normal close frame and shuts the socket down without
// closing it: the poller reading it sees the end of the stream, ends its
// subscriber and closes it. (Closing it here would take it out of the
// poller's epoll set unseen, and its subscriber would never end.)
func (c *wsConn) shutdown() {
	c.sendClose()
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseRead()
	}
}

// close sends a normal close frame and closes the socket. It may be called
// from any goroutine.
func (c *wsConn) close() {
	c.sendClose()
	_ = c.nc.Close()
}

// sendClose writes a normal close frame, waiting at most a moment. It may
// be called from any goroutine: it has its own buffer, and a net.Conn
// write is atomic with respect to others.
func (c *wsConn) sendClose() {
	var b [16]byte
	_ = c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.nc.Write(wsframe.AppendMasked(b[:0], opClose, []byte{0x03, 0xe8})) // 1000
}
