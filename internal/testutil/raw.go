package testutil

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/protocol"
	"github.com/realtime-relay/realtime/internal/wsframe"
)

// RawConn is a WebSocket client made of a bare TCP connection: the test
// decides when, and whether, it reads. It never answers a ping by itself,
// so a RawConn that is not read is both a client that stopped reading and
// a dead peer.
type RawConn struct {
	net.Conn
	t testing.TB
}

// DialStalled upgrades a bare TCP connection with token, requires the 101 and
// returns the connection without reading anything more from it. Its
// receive buffer is shrunk to a few KiB, so that what the server writes
// backs up into the server's own queue soon. It is closed when the test
// ends.
func (r *Relay) DialStalled(t testing.TB, token string) *RawConn {
	t.Helper()
	return r.DialRawConn(t, token, 4<<10)
}

// DialRawConn is DialStalled with a receive buffer of readBuffer bytes
// (0: the kernel's default).
func (r *Relay) DialRawConn(t testing.TB, token string, readBuffer int) *RawConn {
	t.Helper()
	return UpgradeRaw(t, DialTCP(t, r.Addr, readBuffer), r.Addr, token)
}

// DialTCP connects to addr with a receive buffer of readBuffer bytes (0:
// the kernel's default). The connection is closed when the test ends.
func DialTCP(t testing.TB, addr string, readBuffer int) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: Wait}
	nc, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	tc := nc.(*net.TCPConn)
	if readBuffer > 0 {
		require.NoError(t, tc.SetReadBuffer(readBuffer))
	}
	return tc
}

// UpgradeRaw upgrades nc (TCP, or TLS over it) with token, requires the
// 101 and returns the connection without reading anything more from it.
func UpgradeRaw(t testing.TB, nc net.Conn, host, token string) *RawConn {
	t.Helper()
	req := "GET /v1/ws?token=" + token + " HTTP/1.1\r\n" +
		"Host: " + host + "\r\n" +
		"Connection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	require.NoError(t, nc.SetDeadline(time.Now().Add(Wait)))
	_, err := nc.Write([]byte(req))
	require.NoError(t, err)
	// Read the response head byte by byte: a buffered reader could swallow
	// the first frames, which the test wants left in the socket.
	var head []byte
	one := make([]byte, 1)
	for len(head) < 4 || string(head[len(head)-4:]) != "\r\n\r\n" {
		_, err := nc.Read(one)
		require.NoError(t, err, "reading the upgrade response")
		head = append(head, one[0])
		require.Less(t, len(head), 8<<10, "upgrade response too long")
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	require.NoError(t, nc.SetDeadline(time.Time{}))
	return &RawConn{Conn: nc, t: t}
}

// Send writes one masked text frame, as a client must.
func (c *RawConn) Send(text string) {
	c.t.Helper()
	c.WriteFrame(0x1, []byte(text))
}

// WriteFrame writes one final masked frame with opcode.
func (c *RawConn) WriteFrame(opcode byte, payload []byte) {
	c.t.Helper()
	frame := wsframe.AppendMasked(nil, opcode, payload)
	_, err := c.Write(frame)
	require.NoError(c.t, err)
}

// ReadMessages reads server frames until it has n protocol messages (a
// frame may carry several, one per line), skipping pings, and returns
// them. It fails the test after Wait.
func (c *RawConn) ReadMessages(t testing.TB, n int) []protocol.ServerFrame {
	t.Helper()
	var msgs []protocol.ServerFrame
	for len(msgs) < n {
		msgs = append(msgs, c.ReadFrame(t)...)
	}
	return msgs
}

// ReadFrame reads the next text frame, skipping pings and other control
// frames, and returns the protocol messages it carries. It fails the test
// after Wait.
func (c *RawConn) ReadFrame(t testing.TB) []protocol.ServerFrame {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(Wait)))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for {
		opcode, payload, err := wsframe.ReadServerFrame(c.Conn)
		require.NoError(t, err)
		if opcode != 0x1 {
			continue
		}
		frames, err := protocol.SplitServerFrames(payload)
		require.NoError(t, err)
		return frames
	}
}
